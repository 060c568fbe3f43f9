"""Speculative decoding: greedy output with drafts is token-identical to without (exact numerics).

Exact numerics compute every row independently of the batch it is in, so a verified chunk
of guesses gives each row the logits a plain decode step would: speculation may change the
speed, never the tokens. Checked on the real SmolLM2 for n-gram guessing (ngram-simple,
ngram-map-k) and a draft model (draft-simple, the same GGUF as its own draft), one slot and
three slots at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyllama.engine import Model
from pyllama.errors import InvalidRequestError
from pyllama.ngram_mod import NgramModParams
from pyllama.sampling import SamplingParams
from pyllama.scheduler import Scheduler
from pyllama.speculative import (
    MapKState,
    NgramParams,
    SpecParams,
    ngram_map_k_draft,
    ngram_simple_draft,
    parse_types,
)
from pyllama.tasks import Event, Final, Task

CODE = (
    "Repeat this code exactly:\n\ndef add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\n"
    "def mul(a, b):\n    return a * b\n\nAnswer:\n\ndef add(a, b):\n"
)
PROMPTS = [CODE, "Once upon a time, there was a", CODE.replace("add", "plus")]
SMALL = NgramParams(size_n=3, size_m=8)
SMALL_MOD = NgramModParams(n_match=3, n_max=8, n_min=1)


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Model:
    return Model.load(smollm2_path, n_ctx=3 * 256, n_seq=3, weights="dense", numerics="exact")


def run(s: Scheduler, prompts: list[str], spec: SpecParams | None, n: int = 32) -> list[Final]:
    finals: dict[int, Final] = {}

    def emit(e: Event) -> None:
        if isinstance(e, Final):
            finals[e.task_id] = e

    tok = s.model.tokenizer
    ids = [s.submit(Task(tok.tokenize(p), SamplingParams(temperature=0.0), n_predict=n, cache_prompt=False,
                         speculative=spec), emit) for p in prompts]
    for _ in range(10_000):
        if not s.has_work():
            break
        s.step()
    assert all(i in finals for i in ids)
    out = [finals[i] for i in ids]
    assert all(f.error is None for f in out), [f.error for f in out]
    return out


def test_ngram_simple_draft_follows_llama_cpp() -> None:
    tokens = [9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2]
    assert ngram_simple_draft(tokens, 3, 3, 4) == [4, 5, 6, 7]  # 1 2 3 seen at 1: draft what followed
    assert ngram_simple_draft(tokens, 9, 3, 4) == []  # 1 2 9 never seen
    assert ngram_simple_draft(tokens[:5], 3, 3, 4) == []  # too short to hold n + m + 1 tokens
    state = MapKState()
    tokens = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 1, 2]
    assert ngram_map_k_draft(tokens, 3, NgramParams(3, 4), state) == [4, 5, 6, 7]
    state.accepted[state.last_key or ()] = 2  # the next draft for this key is as long as the last accepted
    assert ngram_map_k_draft(tokens, 3, NgramParams(3, 4), state) == [4, 5]


def test_types_and_request_fields() -> None:
    assert parse_types("ngram-simple,ngram-cache") == (("ngram-simple",), ["ngram-cache"])
    assert parse_types("ngram-mod") == (("ngram-mod",), [])
    with pytest.raises(ValueError, match="unknown speculative type"):
        parse_types("ngram-bogus")
    p = SpecParams().with_request({"speculative.type": "ngram-map-k", "speculative.ngram_size_n": 4,
                                   "speculative.n_max": 5, "speculative.p_min": 0.5})
    assert p.types == ("ngram-map-k",) and p.ngram_map_k.size_n == 4 and p.n_max == 5 and p.p_min == 0.5
    assert SpecParams().ngram_simple.size_n == 12  # the default object is untouched
    for bad in ({"speculative.n_max": -1}, {"speculative.p_min": 2}, {"speculative.type": "x"},
                {"speculative.ngram_size_m": "8"}, {"speculative.n_min": True}):
        with pytest.raises(InvalidRequestError):
            SpecParams().with_request(bad)


@pytest.mark.parametrize("kind", ["ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod"])
def test_ngram_greedy_identical_one_slot_and_three(model: Model, kind: str) -> None:
    spec = SpecParams(types=(kind,), ngram_simple=SMALL, ngram_map_k=SMALL, ngram_map_k4v=SMALL, ngram_mod=SMALL_MOD)
    plain = run(Scheduler(model), PROMPTS, None)
    one = run(Scheduler(model), PROMPTS[:1], spec)
    three = run(Scheduler(model), PROMPTS, spec)
    assert one[0].tokens == plain[0].tokens
    assert [f.tokens for f in three] == [f.tokens for f in plain]
    assert one[0].draft_n > 0 and one[0].draft_n_accepted > 0, one[0].timings
    assert one[0].timings["draft_n"] == one[0].draft_n
    assert "draft_n" not in plain[0].timings  # only when something was drafted, as llama-server


def test_draft_model_greedy_identical(model: Model, smollm2_path: Path) -> None:
    draft = Model.load(smollm2_path, n_ctx=3 * 256, n_seq=3, weights="packed")
    spec = SpecParams(types=("draft-simple",), n_max=4)
    plain = run(Scheduler(model), PROMPTS[:2], None, n=16)
    spec_run = run(Scheduler(model, draft_model=draft), PROMPTS[:2], spec, n=16)
    assert [f.tokens for f in spec_run] == [f.tokens for f in plain]
    assert sum(f.draft_n_accepted for f in spec_run) > 0


def test_off_by_default_and_default_from_scheduler(model: Model) -> None:
    s = Scheduler(model, speculative=SpecParams(types=("ngram-simple",), ngram_simple=SMALL))
    assert s.slots[0].info()["speculative"] is True
    f = run(s, PROMPTS[:1], None)[0]
    assert f.draft_n > 0
    off = run(s, PROMPTS[:1], SpecParams())[0]  # a request can turn it off
    assert off.draft_n == 0 and off.tokens == f.tokens
