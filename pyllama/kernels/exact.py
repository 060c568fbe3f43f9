"""`exact` numerics: the block's ops as ggml's CPU backend computes them, bit for bit.

Every op names the ggml routine it replays (pyllama/numerics.py, exact_matmul.py,
flash_attn.py): matmuls quantize their activations to Q8 blocks and sum in ggml's order,
norms sum squares in double, SiLU uses ggml's SIMD exp, RoPE its float32 angle table and
glibc's sinf/cosf, attention the float16 flash-attention accumulator. That is what makes
greedy output equal llama.cpp's token for token (tests/parity); it costs several times
fast numerics' time per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyllama import numerics
from pyllama.batch import Batch
from pyllama.exact_matmul import GgmlLinear
from pyllama.kernels.base import Kernels
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear
from pyllama.ops import RopeTable, attention

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
f32 = np.float32


class PartsLinear:
    """Projections fused at load, run part by part: each part keeps its own ggml kernel (the
    parts may have different types, hence different activation quantizations), and the
    bias is added after each product as llama.cpp's graph does."""

    def __init__(self, parts: Sequence[Linear], biases: Sequence[F32 | None] | None = None) -> None:
        self.parts = list(parts)
        self.n_out = sum(p.n_out for p in parts)
        self.bias: F32 | None = None
        if biases is not None and any(b is not None for b in biases):
            self.bias = np.concatenate(
                [b if b is not None else np.zeros(p.n_out, f32) for p, b in zip(parts, biases, strict=True)]
            ).astype(f32)

    def __call__(self, x: F32) -> F32:
        ys = [p(x) for p in self.parts]
        y: F32 = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=-1)
        if self.bias is not None:
            y += self.bias
        return y


class SequenceAttention:
    """Attention one sequence at a time through ops.attention, which replays ggml's float16
    flash attention where llama.cpp would run it (flash_attn.use_exact_attention)."""

    def __init__(self, kv: KVCache, batch: Batch, causal: bool) -> None:
        self.kv = kv
        self.causal = causal
        self.chunks = [(c.seq, c.pos, len(c.tokens)) for c in batch.chunks]
        self.positions: I64 = batch.positions()

    def attend(self, layer: int, q: F32, k: F32, v: F32, scale: float, *, window: int = 0,
               softcap: float = 0.0) -> F32:
        h, dv = q.shape[1], v.shape[2]
        out = np.empty((q.shape[0], h * dv), dtype=f32)
        start = 0
        for seq, pos, n in self.chunks:
            rows = slice(start, start + n)
            self.kv.write(layer, seq, pos, k[rows], v[rows])
            end = pos + n
            out[rows] = attention(
                q[rows], self.kv.keys(layer, seq, end), self.kv.values(layer, seq, end),
                np.arange(pos, end, dtype=np.int64), np.arange(0, end, dtype=np.int64), scale,
                causal=self.causal, window=window, softcap=softcap,
            )
            start += n
        return out


class ExactKernels(Kernels):
    name = "exact"
    linear_class = GgmlLinear

    def project(self, parts: Sequence[Linear], biases: Sequence[F32 | None] | None = None) -> PartsLinear:
        return PartsLinear(parts, biases)

    def rms_norm(self, x: F32, weight: F32 | None, eps: float) -> F32:
        return numerics.rms_norm(x, weight, eps)

    def silu(self, x: F32) -> F32:
        return numerics.silu(x)

    def gelu(self, x: F32) -> F32:
        return numerics.gelu(x)

    def swiglu(self, gu: F32, n_ff: int) -> F32:
        out: F32 = numerics.silu(gu[:, :n_ff]) * gu[:, n_ff:]
        return out

    def geglu(self, gu: F32, n_ff: int) -> F32:
        out: F32 = numerics.gelu(gu[:, :n_ff]) * gu[:, n_ff:]
        return out

    def rope(self, table: RopeTable) -> RopeTable:
        return table

    def attention(self, kv: KVCache, batch: Batch, causal: bool) -> SequenceAttention:
        return SequenceAttention(kv, batch, causal)
