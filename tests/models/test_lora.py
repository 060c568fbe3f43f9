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
