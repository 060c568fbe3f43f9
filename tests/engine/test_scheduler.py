"""The scheduler on the real SmolLM2: batching many slots gives each the same tokens as alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyllama.engine import Model
from pyllama.sampling import Sampler, SamplingParams
from pyllama.scheduler import Scheduler
from pyllama.tasks import Event, Final, Partial, Task

PROMPTS = ["The capital of France is", "Once upon a time,", "def add(a, b):"]


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Model:
    # exact numerics: every row is computed independently of the batch, so slots batched together
    # give bit-identical tokens to a request alone (fast BLAS kernels depend on the batch shape).
    return Model.load(smollm2_path, n_ctx=3 * 256, n_seq=3, weights="dense", numerics="exact")


def run_all(s: Scheduler, tasks: list[Task]) -> tuple[list[Final], list[list[Partial]]]:
    finals: dict[int, Final] = {}
    partials: dict[int, list[Partial]] = {}

    def emit(e: Event) -> None:
        if isinstance(e, Final):
            finals[e.task_id] = e
        else:
            partials.setdefault(e.task_id, []).append(e)

    ids = [s.submit(t, emit) for t in tasks]
    for _ in range(10_000):
        if not s.has_work():
            break
        s.step()
    assert all(i in finals for i in ids), "scheduler did not finish every task"
    return [finals[i] for i in ids], [partials.get(i, []) for i in ids]


def greedy(n: int = 12, **kw: object) -> SamplingParams:
    return SamplingParams(temperature=0.0, **kw)  # type: ignore[arg-type]


def test_parallel_equals_alone(model: Model) -> None:
    tok = model.tokenizer
    alone = []
    for p in PROMPTS:
        ids = tok.tokenize(p)
        sampler = Sampler(greedy(), model.n_vocab, eog_ids=tok.eog_ids)
        alone.append(list(model.generate(ids, sampler, 12)))
    s = Scheduler(model)
    finals, partials = run_all(s, [Task(tok.tokenize(p), greedy(), n_predict=12, cache_prompt=False) for p in PROMPTS])
    for f, parts, want in zip(finals, partials, alone, strict=True):
        assert f.error is None
        assert f.tokens == want
        assert f.stop_type == "limit" and f.n_decoded == 12
        streamed = "".join(p.text for p in parts) + f.tail
        assert streamed == f.content == tok.detokenize(want)
        assert [t for p in parts for t in p.tokens] == want[: len([t for p in parts for t in p.tokens])]
    assert all(not sl.busy for sl in s.slots)
    assert s.metrics.tokens_predicted_total == 36


def test_stop_string_is_cut_and_never_streamed(model: Model) -> None:
    tok = model.tokenizer
    s = Scheduler(model)
    (f,), (parts,) = run_all(s, [Task(tok.tokenize("The capital of France is"), greedy(), n_predict=20, stop=["\n\n"])])
    assert f.stop_type == "word" and f.stopping_word == "\n\n"
    assert f.content == " Paris."
    assert "\n" not in "".join(p.text for p in parts)


def test_prompt_cache_reuses_prefix(model: Model) -> None:
    tok = model.tokenizer
    s = Scheduler(model)
    base = tok.tokenize("A long shared system prompt about the weather in Paris. " * 4)
    (f1,), _ = run_all(s, [Task(base + tok.tokenize(" Question one?"), greedy(), n_predict=2)])
    (f2,), _ = run_all(s, [Task(base + tok.tokenize(" Another question?"), greedy(), n_predict=2)])
    assert f1.n_cached == 0
    assert f2.n_cached >= len(base) - 1
    assert f2.slot_id == f1.slot_id


def test_context_shift_and_truncation(smollm2_path: Path) -> None:
    small = Model.load(smollm2_path, n_ctx=32, n_seq=1, weights="dense")
    tok = small.tokenizer
    prompt = tok.tokenize("Count: one, two, three,")
    (f,), _ = run_all(Scheduler(small), [Task(prompt, greedy(), n_predict=40, n_keep=4)])
    assert f.error is None and f.n_decoded == 40 and f.truncated
    (g,), _ = run_all(Scheduler(small, context_shift=False), [Task(prompt, greedy(), n_predict=40)])
    assert g.truncated and g.stop_type == "limit" and len(prompt) + g.n_decoded <= 32


def test_prompt_longer_than_context_is_an_error(smollm2_path: Path) -> None:
    small = Model.load(smollm2_path, n_ctx=16, n_seq=1, weights="packed")
    (f,), _ = run_all(Scheduler(small), [Task(list(range(100, 140)), greedy())])
    assert f.error is not None and "context" in f.error and f.error_kind == "context"


def test_cancel_frees_the_slot(model: Model) -> None:
    tok = model.tokenizer
    s = Scheduler(model)
    got: list[Event] = []
    # A prompt whose greedy continuation runs on: after "Tell me a story." llama.cpp's (and
    # now pyllama's) most likely next token is <|im_end|> (p=0.305), which ends the task.
    tid = s.submit(Task(tok.tokenize("Once upon a time, in a small village,"), greedy(), n_predict=200), got.append)
    for _ in range(3):
        s.step()
    assert s.n_busy == 1
    s.cancel(tid)
    s.step()
    assert s.n_busy == 0


def test_embedding_task_is_normalised(model: Model) -> None:
    tok = model.tokenizer
    (f,), _ = run_all(Scheduler(model), [Task(tok.tokenize("Hello world"), kind="embedding")])
    assert f.embedding is not None
    v = np.asarray(f.embedding[0])
    assert v.shape == (model.config.n_embd,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_save_erase_restore_continues_identically(model: Model, tmp_path: Path) -> None:
    from pyllama.slot_store import SlotFileError, safe_path

    tok = model.tokenizer
    prompt = tok.tokenize("The history of the Roman Empire begins")
    s = Scheduler(model)
    (first,), _ = run_all(s, [Task(prompt, greedy(), n_predict=8, id_slot=1)])
    cont = prompt + first.tokens
    (want,), _ = run_all(s, [Task(cont, greedy(), n_predict=8, id_slot=1)])
    # replay: same first part, then save, erase, restore and continue
    s2 = Scheduler(model)
    run_all(s2, [Task(prompt, greedy(), n_predict=8, id_slot=1)])
    path = safe_path(tmp_path, "slot1.bin")
    saved = s2.save_slot(1, path)
    assert saved["n_saved"] == len(prompt) + 7 and saved["n_written"] == path.stat().st_size
    assert s2.erase_slot(1)["n_erased"] == saved["n_saved"]
    restored = s2.restore_slot(1, path)
    assert restored["n_restored"] == saved["n_saved"]
    (got,), _ = run_all(s2, [Task(cont, greedy(), n_predict=8, id_slot=1)])
    assert got.n_cached >= saved["n_saved"] - 1
    assert got.tokens == want.tokens
    with pytest.raises(Exception, match="invalid filename"):
        safe_path(tmp_path, "../x")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SlotFileError):
        s2.restore_slot(1, bad)


def test_metrics_count_the_tokens_each_step_processes(model: Model) -> None:
    tok = model.tokenizer
    s = Scheduler(model)
    prompt = tok.tokenize("The capital of France is")
    (f,), (parts,) = run_all(s, [Task(prompt, greedy(), n_predict=5, cache_prompt=False)])
    m = s.metrics
    assert (m.prompt_tokens_total, m.tokens_predicted_total) == (len(prompt), 5) == (f.timings["prompt_n"], f.n_decoded)
    assert m.n_decode_total == 5 and m.prompt_seconds_total > 0 and m.predicted_seconds_total > 0
    # A cancelled task still counts what it processed: its prompt and the tokens it produced.
    got: list[Event] = []
    long_prompt = tok.tokenize("Once upon a time, in a small village,")
    tid = s.submit(Task(long_prompt, greedy(), n_predict=200, cache_prompt=False), got.append)
    for _ in range(3):
        s.step()
    s.cancel(tid)
    s.step()
    assert s.n_busy == 0 and not any(isinstance(e, Final) for e in got)
    produced = sum(len(e.tokens) for e in got if isinstance(e, Partial))
    assert m.prompt_tokens_total == len(prompt) + len(long_prompt)
    assert m.tokens_predicted_total == 5 + 3 and produced <= 3
    # Partial events carry their slot and the task's running statistics.
    last = parts[-1]
    assert last.slot_id == f.slot_id and last.n_prompt == len(prompt) and last.n_decoded <= 5
    assert last.timings["prompt_n"] == len(prompt) and last.timings["predicted_n"] == last.n_decoded


def test_waiting_tasks_are_deferred(model: Model) -> None:
    tok = model.tokenizer
    s = Scheduler(model)
    tasks = [Task(tok.tokenize(p), greedy(), n_predict=2, cache_prompt=False) for p in [*PROMPTS, "Hello"]]
    for t in tasks:
        s.submit(t, lambda e: None)
    assert s.n_waiting == 4
    s.step()
    assert (s.n_busy, s.n_waiting, s.deferred) == (3, 1, 1)
    while s.has_work():
        s.step()
    assert (s.n_busy, s.n_waiting, s.deferred) == (0, 0, 0)


def test_sliding_window_prompts_are_cut_like_llama_server(gemma_path: Path) -> None:
    """Gemma 3 has sliding-window layers: llama-server ends prompt batches 4 + n_ubatch and 4
    tokens before the end of the prompt, and so must we (the rounding depends on the batch)."""
    from pyllama.models import Batch
    from pyllama.numerics import server_prompt_batches

    # exact numerics: the cuts exist to reproduce llama-server's rounding (fast numerics also
    # send the last prompt token alone, see Scheduler._prompt_take)
    gemma = Model.load(gemma_path, n_ctx=64, n_ubatch=8, weights="packed", numerics="exact")
    seen: list[tuple[int, int]] = []
    decode = gemma.decode

    def recording_decode(batch: Batch) -> np.ndarray:
        for c in batch.chunks:
            seen.append((c.pos, c.pos + len(c.tokens)))
        return decode(batch)

    gemma.decode = recording_decode  # type: ignore[method-assign]
    prompt = gemma.tokenizer.tokenize("The sliding window of this model covers the last few tokens only, so")
    assert len(prompt) > 12
    (f,), _ = run_all(Scheduler(gemma), [Task(prompt, greedy(), n_predict=1, cache_prompt=False)])
    assert f.error is None
    assert seen == server_prompt_batches(len(prompt), swa=True, n_ubatch=8)
