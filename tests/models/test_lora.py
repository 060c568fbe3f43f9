"""LoRA adapters applied at matmul time equal the merged-weights model (W + scale * B @ A).

Every matrix of the tiny models gets an A/B pair: separate Q/K/V and gate/up (fused at
load), a file's fused attn_qkv/ffn_up (Phi-3), a tied head with a flipped token_embd pair
(Gemma), experts and their router (Mixtral). Dense F32 weights, packed F16 and packed Q8_0
(the merged model holds the base's dequantized values plus the delta, in F32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyllama.engine import Model
from pyllama.errors import ModelLoadError
from pyllama.lora import LoraAdapter, attach_adapters, check_adapter_file
from pyllama.models import Batch, SeqChunk
from pyllama.quant.grouped import _GroupedCodes as GroupedCodes
from pyllama.sampling import SamplingParams
from pyllama.scheduler import Scheduler
from pyllama.tasks import Final, Task
from tests.models import synth
from tests.models.lora_synth import write_lora

OPTS: dict[str, object] = {"n_ctx": synth.N_CTX, "cache_type_k": "f32", "cache_type_v": "f32"}


def logits(model: Model) -> np.ndarray:
    model.kv.clear(0)
    return model.decode(Batch([SeqChunk(0, list(synth.PROMPT), 0, "all")]))


def with_adapter(path: Path, adapter: Path, scale: float = 1.0, weights: str = "dense", **kw: object) -> Model:
    model = Model.load(path, weights=weights, **OPTS, **kw)  # type: ignore[arg-type]
    attach_adapters(model, [LoraAdapter.read(adapter)], [scale])
    return model


@pytest.mark.parametrize("name", ["llama", "phi3", "gemma", "mixtral"])
def test_dense_equals_merged(name: str, tmp_path: Path) -> None:
    files = write_lora(name, tmp_path, user_scale=0.75)
    merged = logits(Model.load(files.merged, weights="dense", **OPTS))  # type: ignore[arg-type]
    base = logits(Model.load(files.base, weights="dense", **OPTS))  # type: ignore[arg-type]
    got = logits(with_adapter(files.base, files.adapter, 0.75))
    assert np.abs(merged - base).max() > 0.5  # the adapter changes the model a lot
    np.testing.assert_allclose(got, merged, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize(("name", "kind"), [("llama", "q8_0"), ("llama", "f16"), ("phi3", "q8_0"),
                                            ("mixtral", "q8_0")])
def test_packed_equals_merged(name: str, kind: str, tmp_path: Path) -> None:
    files = write_lora(name, tmp_path, kind=kind)
    merged = logits(Model.load(files.merged, weights="dense", **OPTS))  # type: ignore[arg-type]
    model = with_adapter(files.base, files.adapter, 1.0, weights="packed")
    layer = model.net.layers[0]
    if kind == "q8_0":  # really packed: the base weights stay quantized codes, not copied
        assert isinstance(getattr(layer.qkv, "base").packed, GroupedCodes)  # noqa: B009
    np.testing.assert_allclose(logits(model), merged, atol=2e-3, rtol=1e-4)


def test_scale_zero_is_the_base_model_and_scales_switch(tmp_path: Path) -> None:
    files = write_lora("llama", tmp_path)
    base = logits(Model.load(files.base, weights="dense", **OPTS))  # type: ignore[arg-type]
    merged = logits(Model.load(files.merged, weights="dense", **OPTS))  # type: ignore[arg-type]
    model = with_adapter(files.base, files.adapter, 0.0)
    np.testing.assert_array_equal(logits(model), base)
    assert model.lora is not None
    model.lora.active = (1.0,)
    np.testing.assert_allclose(logits(model), merged, atol=2e-3, rtol=1e-4)


def test_exact_numerics_apply_the_adapter(tmp_path: Path) -> None:
    files = write_lora("llama", tmp_path)
    merged = logits(Model.load(files.merged, weights="dense", numerics="exact", **OPTS))  # type: ignore[arg-type]
    got = logits(with_adapter(files.base, files.adapter, 1.0, numerics="exact"))
    np.testing.assert_allclose(got, merged, atol=0.05)


def test_adapter_for_another_model_is_refused(tmp_path: Path) -> None:
    llama = write_lora("llama", tmp_path)
    phi3 = write_lora("phi3", tmp_path)
    with pytest.raises(ModelLoadError, match="arch mismatch"):
        check_adapter_file(phi3.adapter, llama.base)
    other = write_lora("qwen3", tmp_path, arch="llama")  # same names, qwen3's Q/K norms are not adapted
    check_adapter_file(other.adapter, llama.base)  # same shapes: a valid adapter for it
    bad = write_lora("mixtral", tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist in base model"):
        check_adapter_file(bad.adapter, llama.base)
    with pytest.raises(ModelLoadError, match=r"expect general\.type to be 'adapter'"):
        LoraAdapter.read(llama.base)


def run(sched: Scheduler, tasks: list[Task]) -> list[list[int]]:
    finals: dict[int, Final] = {}
    ids = [sched.submit(t, lambda e: finals.__setitem__(e.task_id, e) if isinstance(e, Final) else None)
           for t in tasks]
    while sched.has_work():
        sched.step()
    assert all(finals[i].error is None for i in ids), [finals[i].error for i in ids]
    return [finals[i].tokens for i in ids]


def test_scheduler_runs_tasks_with_different_scales_side_by_side(tmp_path: Path) -> None:
    """Per-task scales, several at once on 4 slots: each task's tokens equal the ones the
    model with that scale merged in generates alone."""
    files = write_lora("llama", tmp_path)
    greedy = SamplingParams(temperature=0.0)

    def task(lora: tuple[float, ...] | None) -> Task:
        return Task(prompt=list(synth.PROMPT[:8]), params=greedy, n_predict=6, lora=lora)

    def alone(path: Path) -> list[int]:
        model = Model.load(path, weights="dense", **{**OPTS, "n_ctx": 4 * synth.N_CTX, "n_seq": 4})  # type: ignore[arg-type]
        return run(Scheduler(model), [task(None)])[0]

    want_base, want_merged = alone(files.base), alone(files.merged)
    assert want_base != want_merged
    model = Model.load(files.base, weights="dense", **{**OPTS, "n_ctx": 4 * synth.N_CTX, "n_seq": 4})  # type: ignore[arg-type]
    attach_adapters(model, [LoraAdapter.read(files.adapter)], [1.0])
    got = run(Scheduler(model), [task((0.0,)), task((1.0,)), task(None), task((0.0,)), task((1.0,))])
    assert got == [want_base, want_merged, want_merged, want_base, want_merged]


# -- aLoRA (pyllama/alora.py) ------------------------------------------------------------------

ALORA_PROMPT = list(synth.PROMPT[:20])
INVOKE = (ALORA_PROMPT[11], ALORA_PROMPT[12])  # the invocation sequence, found at 11


def greedy_hybrid(files_base: Path, files_merged: Path, prompt: list[int], switch: int, n: int) -> list[int]:
    """The reference: the base model reads prompt[:switch], the merged model (sharing the
    same KV cache) reads the rest and generates greedily; the last prompt token alone, as the
    scheduler reads it."""
    base = Model.load(files_base, weights="dense", **OPTS)  # type: ignore[arg-type]
    merged = Model.load(files_merged, weights="dense", **OPTS)  # type: ignore[arg-type]
    merged.net.kv = base.net.kv
    if switch > 0:
        base.decode(Batch([SeqChunk(0, prompt[:switch], 0, "none")]))
    if len(prompt) - 1 > switch:
        merged.decode(Batch([SeqChunk(0, prompt[switch:-1], switch, "none")]))
    out: list[int] = []
    row = merged.decode(Batch([SeqChunk(0, prompt[-1:], len(prompt) - 1, "last")]))[-1]
    for _ in range(n):
        out.append(int(np.argmax(row)))
        row = merged.decode(Batch([SeqChunk(0, out[-1:], len(prompt) + len(out) - 1, "last")]))[-1]
    return out


def test_invocation_search_is_llama_servers_scan() -> None:
    from pyllama.alora import invocation_start

    assert invocation_start([5, 1, 2, 7, 1, 2, 9], [1, 2]) == 4  # the last occurrence
    assert invocation_start([1, 2, 2], [1, 2]) is None  # the scan's quirk: a failed match skips a token
    assert invocation_start([3, 4], [1, 2]) is None and invocation_start([1, 2], []) is None
    assert invocation_start([1, 2, 3], [1, 2, 3]) == 0


def test_alora_applies_from_the_invocation_on(tmp_path: Path) -> None:
    """An aLoRA's output: the base model's before its invocation sequence (one token before,
    where llama-server switches), the merged weights' from there on; without the sequence in
    the prompt it is the base model's throughout."""
    from pyllama.alora import invocation_start

    assert invocation_start(ALORA_PROMPT, INVOKE) == 11
    files = write_lora("llama", tmp_path, invocation=INVOKE)
    assert LoraAdapter.read(files.adapter).alora_invocation_tokens == INVOKE
    greedy = SamplingParams(temperature=0.0)
    model = with_adapter(files.base, files.adapter, 1.0)
    want = greedy_hybrid(files.base, files.merged, ALORA_PROMPT, 10, 6)
    assert want != greedy_hybrid(files.base, files.merged, ALORA_PROMPT, 0, 6)  # the switch matters
    assert want != greedy_hybrid(files.base, files.base, ALORA_PROMPT, 0, 6)
    got = run(Scheduler(model, n_batch=8), [Task(prompt=ALORA_PROMPT, params=greedy, n_predict=6)])[0]
    assert got == want
    plain = [t for t in ALORA_PROMPT if t != INVOKE[1]]  # no invocation: the base model all along
    alone = run(Scheduler(with_adapter(files.base, files.adapter, 1.0)), [Task(prompt=plain, params=greedy, n_predict=6)])
    assert alone[0] == greedy_hybrid(files.base, files.base, plain, 0, 6)


def test_alora_cache_reuse_follows_llama_server(tmp_path: Path) -> None:
    """The cached prompt survives base -> aLoRA (its entries before the switch are the base
    model's) but is reused only up to the switch; aLoRA -> base drops it."""
    files = write_lora("llama", tmp_path, invocation=INVOKE)
    sched = Scheduler(with_adapter(files.base, files.adapter, 1.0))
    greedy = SamplingParams(temperature=0.0)

    def one(lora: tuple[float, ...]) -> Final:
        finals: list[Final] = []
        sched.submit(Task(prompt=ALORA_PROMPT, params=greedy, n_predict=3, id_slot=0, lora=lora),
                     lambda e: finals.append(e) if isinstance(e, Final) else None)
        while sched.has_work():
            sched.step()
        assert finals[0].error is None, finals[0].error
        return finals[0]

    assert one((0.0,)).n_cached == 0
    first = one((1.0,))
    assert first.n_cached == 10  # base -> aLoRA: kept, up to one token before the invocation
    again = one((1.0,))
    assert again.n_cached == 10 and again.tokens == first.tokens
    assert one((0.0,)).n_cached == 0  # aLoRA -> base: the cache holds adapter entries, dropped


def test_two_aloras_at_once_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_lora("llama", tmp_path / "a", invocation=INVOKE)
    b = write_lora("llama", tmp_path / "b", invocation=INVOKE[:1])
    model = Model.load(a.base, weights="dense", **OPTS)  # type: ignore[arg-type]
    attach_adapters(model, [LoraAdapter.read(a.adapter), LoraAdapter.read(b.adapter)], [1.0, 1.0])
    finals: list[Final] = []
    sched = Scheduler(model)
    sched.submit(Task(prompt=ALORA_PROMPT, n_predict=2), lambda e: finals.append(e) if isinstance(e, Final) else None)
    while sched.has_work():
        sched.step()
    assert finals[0].error == "Cannot run multiple aLoRAs in a single request"
    assert finals[0].error_kind == "invalid_request"


def test_alora_tokens_must_be_uint32(tmp_path: Path) -> None:
    import gguf

    files = write_lora("llama", tmp_path, invocation=INVOKE)
    bad = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(str(bad), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)
    w.add_array("adapter.alora.invocation_tokens", [1, 2])  # int32 elements
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelLoadError, match=r"invalid gguf element type for adapter\.alora\.invocation_tokens"):
        LoraAdapter.read(bad)
    assert LoraAdapter.read(files.adapter, load=False).alora_invocation_tokens == INVOKE
