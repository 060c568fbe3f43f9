"""Memory arithmetic from GGUF tensor shapes: the dense footprint, the budget check, the roofline.

Why here and not in the engine: the CLI must say what dense mode will cost *before* it
spends a minute repacking into float32, and refuse in one line when it would not fit
(`--mem-budget`). Everything is computed from the header (shapes, types, hyperparameters),
so it is instant and allocates nothing. `Model.from_gguf` may call `check_dense_budget`
itself; the CLI calls it already.

The roofline half: token generation reads every weight once per token, so bytes/token of
a layout divided by the machine's copy bandwidth bounds tokens/second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pyllama.config import read_config
from pyllama.errors import ModelLoadError
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import CACHE_TYPE_BYTES, cache_element_bytes

MIB = 2**20


@dataclass(frozen=True)
class Footprint:
    """Bytes the dense layout holds: float32 weights plus the KV cache."""

    weights: int
    kv_cache: int
    n_ctx: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache

    def describe(self) -> str:
        return (
            f"dense weights {self.weights / MIB:.0f} MiB + KV cache {self.kv_cache / MIB:.0f} MiB "
            f"(n_ctx {self.n_ctx}) = {self.total / MIB:.0f} MiB"
        )


def dense_weight_bytes(gguf: GGUFFile) -> int:
    """Every tensor as float32 (4 bytes per element)."""
    return sum(4 * t.n_elements for t in gguf.tensors.values())


def kv_cache_bytes(
    gguf: GGUFFile, n_ctx: int, n_seq: int = 1, cache_type_k: str = "f16", cache_type_v: str = "f16",
    kv_unified: bool = False, widen_f16: bool = True,
) -> int:
    """The KV cache Model.from_gguf allocates: every layer keeps n_ctx cells (n_ctx <= 0: the
    training context), split between sequences unless unified. `widen_f16` (fast numerics,
    the default): f16 caches are held as float32 (kv_cache.py says why)."""
    for t in (cache_type_k, cache_type_v):
        if t not in CACHE_TYPE_BYTES:
            raise ModelLoadError(f"unsupported KV cache type {t!r} (supported: {', '.join(CACHE_TYPE_BYTES)})")
    cfg = read_config(gguf)
    if n_ctx <= 0:
        n_ctx = cfg.n_ctx_train
    n_seq = max(1, n_seq)
    cells = n_ctx * n_seq if kv_unified else max(1, n_ctx // n_seq) * n_seq
    per_cell = cfg.n_head_kv * (
        cfg.head_dim * cache_element_bytes(cache_type_k, widen_f16)
        + cfg.head_dim_v * cache_element_bytes(cache_type_v, widen_f16)
    )
    return int(cfg.n_layer * cells * per_cell)


def dense_footprint(
    gguf: GGUFFile, n_ctx: int, n_seq: int = 1, cache_type_k: str = "f16", cache_type_v: str = "f16",
    widen_f16: bool = True,
) -> Footprint:
    cfg_ctx = n_ctx if n_ctx > 0 else read_config(gguf).n_ctx_train
    kv = kv_cache_bytes(gguf, n_ctx, n_seq, cache_type_k, cache_type_v, widen_f16=widen_f16)
    return Footprint(dense_weight_bytes(gguf), kv, cfg_ctx)


def check_dense_budget(gguf: GGUFFile, footprint: Footprint, budget_bytes: int) -> None:
    """One-line ModelLoadError when the dense layout would not fit the budget."""
    if footprint.total > budget_bytes:
        raise ModelLoadError(
            f"{gguf.path}: {footprint.describe()} exceeds the memory budget of {budget_bytes / MIB:.0f} MiB "
            "(use --weights packed, a smaller -c, or raise --mem-budget)"
        )


def weight_bytes_per_token(gguf: GGUFFile, layout: str) -> int:
    """Weight bytes one generated token reads: all of them once, except that the token
    embedding is only indexed (one row) unless it doubles as the output head (tied)."""
    if layout not in ("dense", "packed"):
        raise ValueError(f"layout must be dense or packed, not {layout!r}")
    tied = "output.weight" not in gguf.tensors
    total = 0
    for name, t in gguf.tensors.items():
        n = 4 * t.n_elements if layout == "dense" else t.n_bytes
        if name == "token_embd.weight" and not tied:
            n //= max(1, t.shape[0])
        total += n
    return total


def copy_bandwidth(nbytes: int = 256 * MIB, repeats: int = 5) -> float:
    """Best-of-N bytes/second of a NumPy float32 copy, counting read + write (STREAM "copy")."""
    n = max(1, nbytes // 4)
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best
