"""Synthetic LoRA adapters for the tiny models of synth.py, and the merged models they equal.

`write_lora(name, ...)` writes three GGUFs with gguf.GGUFWriter: the base model (weights
F32, F16 or Q8_0), an adapter with an A/B pair for every matrix (`token_embd` in llama.cpp's
flipped layout), and the base with W + scale * B @ A merged in (F32, from the base's
dequantized values), which the adapter applied at matmul time must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from tests.models import synth

RANK = 4
ALPHA = 8.0


@dataclass
class LoraFiles:
    base: Path
    adapter: Path
    merged: Path
    scale: float  # user scale * alpha / rank, as merged


def _stored(a: np.ndarray[Any, Any], kind: str) -> tuple[np.ndarray[Any, Any], Any, np.ndarray[Any, Any]]:
    """(array to write, raw type or None, float32 values a reader gets back)."""
    if a.ndim < 2 or kind == "f32":
        return a, None, a
    if kind == "f16":
        h = a.astype(np.float16)
        return h, None, h.astype(np.float32)
    q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
    return q, gguf.GGMLQuantizationType.Q8_0, gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)


def _write(b: synth.Builder, tensors: list[tuple[str, np.ndarray[Any, Any], Any]], path: Path) -> None:
    w = gguf.GGUFWriter(str(path), b.arch)
    w.add_name("tiny test model")
    for key, v, kind in b.kv:
        {"u32": w.add_uint32, "f32": w.add_float32, "bool": w.add_bool}.get(kind, w.add_string)(key, v)
    synth.add_tokenizer(w)
    for name, a, raw in tensors:
        if raw is None:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, a, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def adapted(name: str, shape: tuple[int, ...], skip: frozenset[str]) -> bool:
    return len(shape) >= 2 and name.endswith(".weight") and name not in skip


def write_lora(name: str, folder: Path, *, kind: str = "f32", user_scale: float = 1.0,
               skip: frozenset[str] = frozenset(), arch: str | None = None,
               invocation: tuple[int, ...] = ()) -> LoraFiles:
    """Base, adapter and merged GGUFs for model `name` of synth.MODELS (see the module doc);
    with `invocation`, the adapter is an aLoRA invoked by those tokens."""
    model_arch, build = synth.MODELS[name]
    b = synth.Builder(name, model_arch)
    build(b)
    rng = np.random.default_rng(7)
    scale = user_scale * ALPHA / RANK
    base: list[tuple[str, np.ndarray[Any, Any], Any]] = []
    merged: list[tuple[str, np.ndarray[Any, Any], Any]] = []
    pairs: list[tuple[str, np.ndarray[Any, Any]]] = []
    for tname, a in b.tensors:
        stored, raw, values = _stored(a, kind)
        base.append((tname, stored, raw))
        if not adapted(tname, a.shape, skip):
            merged.append((tname, values, None))
            continue
        lead, (n_out, n_in) = a.shape[:-2], a.shape[-2:]
        la = (0.1 * rng.standard_normal((*lead, RANK, n_in))).astype(np.float32)
        lb = (0.1 * rng.standard_normal((*lead, n_out, RANK))).astype(np.float32)
        if tname == "token_embd.weight":  # llama.cpp's flipped pair: A (n_vocab, rank), B (n_embd, rank)
            fa, fb = lb, np.ascontiguousarray(np.swapaxes(la, -1, -2))
            pairs += [(f"{tname}.lora_a", fa), (f"{tname}.lora_b", fb)]
            delta = fa @ fb.T
        else:
            pairs += [(f"{tname}.lora_a", la), (f"{tname}.lora_b", lb)]
            delta = lb @ la
        merged.append((tname, (values + np.float32(scale) * delta).astype(np.float32), None))
    tag = "-alora" if invocation else ""
    paths = LoraFiles(folder / f"{name}-{kind}.gguf", folder / f"{name}-{kind}{tag}-lora.gguf",
                      folder / f"{name}-{kind}-merged.gguf", scale)
    _write(b, base, paths.base)
    _write(b, merged, paths.merged)
    w = gguf.GGUFWriter(str(paths.adapter), arch or model_arch)
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", ALPHA)
    w.add_string("adapter.lora.task_name", "test-task")
    if invocation:
        w.add_key_value("adapter.alora.invocation_tokens", list(invocation), gguf.GGUFValueType.ARRAY,
                        sub_type=gguf.GGUFValueType.UINT32)
    for tname, a in pairs:
        w.add_tensor(tname, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return paths


def write_adapter_for(model: Path, out: Path, suffixes: tuple[str, ...] = ("attn_q.weight", "attn_v.weight"),
                      rank: int = 4) -> Path:
    """A small random LoRA adapter for a real model (its `suffixes` tensors), F16 as
    convert_lora_to_gguf writes them."""
    from pyllama.gguf_file import read_gguf

    base = read_gguf(model)
    rng = np.random.default_rng(11)
    w = gguf.GGUFWriter(str(out), base.architecture)
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 2.0 * rank)
    for name, t in base.tensors.items():
        if name.endswith(suffixes) and len(t.shape) == 2:
            n_out, n_in = t.shape
            w.add_tensor(f"{name}.lora_a", (0.02 * rng.standard_normal((rank, n_in))).astype(np.float16))
            w.add_tensor(f"{name}.lora_b", (0.02 * rng.standard_normal((n_out, rank))).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
