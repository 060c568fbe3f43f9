"""`fast` numerics: the block's ops in plain float32, in as few NumPy calls as possible.

WHY so few calls: one decode step of SmolLM2-135M multiplies ~540 MB of float32 weights,
and the layer code around those matmuls runs 30 times per token; op by op it cost as much
as the matmuls themselves (docs/performance.md has the measurements). So:

- `FusedLinear`: Q/K/V, and gate/up, as ONE matmul. Dense weights become one transposed
  (n_in, n_out) matrix on BLAS, which OpenBLAS streams once even for a few rows; without
  BLAS (Pyodide) the file's row-major layout is kept for `np.einsum`. Packed weights of
  one type are repacked as one tensor (one tile loop per call).
- Norms, RoPE and activations in a handful of float32 ufuncs (RoPE on adjacent pairs is
  one complex64 multiply by a precomputed e^{i*theta} table).
- Attention planned once per forward pass (kernels/fast_attention.py).

Activations stay float32 (ggml rounds them to 8-bit blocks): measured closer to
llama.cpp's logits and, above all, a row's logits do not depend on the batch it was
computed in, so a prompt gives the same text cached or not, alone or batched with other
slots (docs/numerics.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType

from pyllama import numerics
from pyllama.batch import Batch
from pyllama.kernels.arena import WeightArena
from pyllama.kernels.base import AttentionPass, Kernels, Projection
from pyllama.kernels.fast_attention import AttentionPlan
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear, default_scratch
from pyllama.ops import RopeTable
from pyllama.quant import PackedTensor, dequantize, repack
from pyllama.quant.layout import RowRange
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, matmul_t
from pyllama.quant.pages import release_file_pages

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
f16, f32 = np.float16, np.float32
# Dense parts at least this big are dequantized again from the file into the fused layout
# instead of copied (no transient second copy); float files are copied (nothing to redo).
REDEQUANT_BYTES = 32 << 20
# Constants as 0-d float32 arrays: an array operand costs a ufunc call half the time of a
# NumPy scalar one (docs/performance.md). Never written to.
ONE, CAP_80, TEN = np.ones((), f32), np.full((), 80.0, f32), np.full((), 10.0, f32)
FLOAT_FILE_TYPES = frozenset({GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16})


# Up to this many rows (decode steps of 2-3 slots) a matmul runs as one gemv per row: OpenBLAS's
# sgemm for 2-3 rows takes 2-4x the time of two or three gemv calls (SmolLM2's projections,
# 1 and 2 threads; from 4 rows on sgemm is ahead: docs/performance.md, "Two and three rows").
GEMV_ROWS = 3


class FusedLinear:
    """Several weights applied to the same input as one matmul: y = [x W1^T | x W2^T | ...] + b.

    Parts must share the input width. Each part's `weight` (or `packed`) is rebound to its
    rows of the fused matrix, so the parts (embedding lookups of a tied head) and this
    share one copy of the weights. Biases (may be None per part) are concatenated.
    """

    def __init__(self, parts: Sequence[Linear], biases: Sequence[F32 | None] | None = None,
                 arena: WeightArena | None = None, backend: MatmulBackend = DEFAULT_BACKEND) -> None:
        if not parts or any(p.n_in != parts[0].n_in for p in parts):
            raise ValueError("FusedLinear needs parts of one input width")
        self.parts = list(parts)
        self.backend = backend
        self.n_in = parts[0].n_in
        self.n_out = sum(p.n_out for p in parts)
        self.bounds: list[tuple[int, int]] = []
        start = 0
        for p in parts:
            self.bounds.append((start, start + p.n_out))
            start += p.n_out
        self.weight: F32 | None = None  # row-major fused weight (einsum backend)
        self.wt: F32 | None = None  # transposed fused weight (BLAS backend)
        self.packed: PackedTensor | None = None
        if all(p.weight is not None for p in parts):
            if backend == "blas":
                self.wt = self._transposed(parts, arena)
            elif len(parts) == 1:
                self.weight = parts[0].weight
            else:
                w = np.concatenate([p.weight for p in parts if p.weight is not None], axis=0)
                for p, (a, b) in zip(parts, self.bounds, strict=True):
                    p.weight = w[a:b]
                self.weight = w
        elif len(parts) > 1 and all(p.packed is not None and p.weight is None for p in parts) and \
                len({p.info.ggml_type for p in parts}) == 1:
            # Rows are independent blocks: the parts' bytes side by side are one valid tensor.
            raw = np.concatenate([np.asarray(p.info.data).reshape(-1) for p in parts])
            packed = repack(raw, parts[0].info.ggml_type, (self.n_out, self.n_in), layout=parts[0].layout)
            for p, (a, b) in zip(parts, self.bounds, strict=True):
                p.packed = RowRange(packed, a, b)
                release_file_pages(p.info.data)
            self.packed = packed
        elif len(parts) == 1 and parts[0].weight is None:
            self.packed = parts[0].packed
        self.bias: F32 | None = None
        if biases is not None and any(b is not None for b in biases):
            self.bias = np.concatenate(
                [b if b is not None else np.zeros(p.n_out, f32) for p, b in zip(parts, biases, strict=True)]
            ).astype(f32)
        # Factors folded into the weights (`fold`): this computes ((x * in_scale) W + b) * out_scale
        # of the x it is given. LoRA deltas read them to stay exact (pyllama/lora.py).
        self.in_scale: F32 | None = None
        self.out_scale: F32 | None = None

    def fold(self, in_scale: F32 | None = None, out_scale: F32 | None = None) -> bool:
        """Multiply the dense weights by per-input and/or per-output factors, once at load, so
        the elementwise multiply they replace (an RMSNorm weight before this projection, the
        attention scale after it) is not paid on every call. False (nothing changed) when the
        weights are packed: those stay the file's blocks."""
        w = self.wt if self.wt is not None else self.weight
        if w is None:
            return False
        if not w.flags.writeable:  # a float32 file's mapped bytes (einsum layout): copy first
            w = w.copy()
        rows, cols = (in_scale, out_scale) if self.wt is not None else (out_scale, in_scale)
        if rows is not None:
            w *= rows[:, None]
        if cols is not None:
            w *= cols[None, :]
        for p, (a, b) in zip(self.parts, self.bounds, strict=True):  # the parts read the folded values
            p.weight = w[:, a:b].T if self.wt is not None else w[a:b]
        if self.wt is not None:
            self.wt = w
        else:
            self.weight = w
        if in_scale is not None:
            self.in_scale = in_scale if self.in_scale is None else self.in_scale * in_scale
        if out_scale is not None:
            self.out_scale = out_scale if self.out_scale is None else self.out_scale * out_scale
            if self.bias is not None:
                self.bias = self.bias * out_scale
        return True

    def _transposed(self, parts: Sequence[Linear], arena: WeightArena | None) -> F32:
        """The parts as one (n_in, n_out) matrix, for x @ wt.

        C-contiguous (OpenBLAS's gemv_n for one row: long contiguous columns of the output)
        when the projection widens or keeps the width; when it narrows (n_in > n_out: the
        FFN's down, Gemma's output projection) the file's own row-major (n_out, n_in) seen
        transposed, so one row is a gemv_t over long rows, each thread reading one
        contiguous half. Measured on SmolLM2's down (1536 -> 576), one row: 215 -> 207 us
        at 1 thread, 169-192 -> 106-130 us at 2 (docs/performance.md, "Decode step").

        A big quantized part (a head or tied embedding: Gemma's is 671 MB) is dropped first
        and dequantized again from the file straight into the transposed matrix, so load
        never holds two float32 copies of it.
        """
        narrows = self.n_in > self.n_out
        shape = (self.n_out, self.n_in) if narrows else (self.n_in, self.n_out)
        buf = arena.empty(shape) if arena is not None else np.empty(shape, dtype=f32)
        wt = buf.T if narrows else buf
        for p, (a, b) in zip(parts, self.bounds, strict=True):
            assert p.weight is not None
            if p.weight.nbytes >= REDEQUANT_BYTES and p.info.ggml_type not in FLOAT_FILE_TYPES:
                p.weight = None
                rows = np.asarray(p.info.data).reshape(p.n_out, -1)
                step = max(64, (1 << 22) // self.n_in)
                for r in range(0, b - a, step):
                    k = min(step, b - a - r)
                    wt[:, a + r : a + r + k] = dequantize(rows[r : r + k], p.info.ggml_type, (k, self.n_in)).T
                release_file_pages(p.info.data)
            else:
                w = p.weight
                for r in range(0, b - a, 64):  # transposed in blocks: faster than whole
                    wt[:, a + r : min(b, a + r + 64)] = w[r : r + 64].T
            p.weight = wt[:, a:b].T  # the part (embedding rows) reads the same memory
        return wt

    def __call__(self, x: F32) -> F32:
        """x (T, n_in) float32 -> (T, n_out)."""
        y: F32
        if self.wt is not None:
            if 1 < x.shape[0] <= GEMV_ROWS:  # OpenBLAS's sgemm for 2-3 rows costs more than a gemv per row
                y = np.empty((x.shape[0], self.n_out), dtype=f32)
                for i in range(x.shape[0]):
                    np.matmul(x[i], self.wt, out=y[i])
            else:
                y = np.matmul(x, self.wt)
        else:
            x = np.ascontiguousarray(x, dtype=f32)
            if self.weight is not None:
                y = matmul_t(x, self.weight, backend=self.backend)
            else:
                y = np.empty((x.shape[0], self.n_out), dtype=f32)
                if self.packed is not None:
                    pool = self.parts[0].scratch or default_scratch()
                    self.packed.matmul_t_into(x, y, pool.get(self.packed.scratch_size()), self.backend)
                else:  # packed parts of different types: one after the other
                    for p, (a, b) in zip(self.parts, self.bounds, strict=True):
                        y[:, a:b] = p(x)
        if self.bias is not None:
            y += self.bias
        return y


class FastRope:
    """RoPE from a RopeTable's cos/sin, applied in place in a few calls.

    Adjacent pairs (llama's "normal" mode): x viewed as complex64 times e^{i*theta}, one
    multiply. NeoX halves: four multiplies on the two half views.
    """

    def __init__(self, table: RopeTable) -> None:
        self.n_rot = table.n_rot
        self.neox = table.rope.neox
        self.cos = table.cos
        self.sin = table.sin
        self.rot = (table.cos + 1j * table.sin).astype(np.complex64) if not self.neox else None
        # The rows of the last positions array seen: every layer of a forward pass rotates by
        # the same positions (AttentionPlan.positions), so the gather runs once per pass.
        self._last: tuple[I64, np.ndarray[Any, Any]] | None = None

    def apply(self, x: F32, positions: I64) -> None:
        """Rotate x (T, H, Dh), last axis contiguous, in place by each row's position."""
        n = self.n_rot
        if self.rot is not None:
            if self._last is None or self._last[0] is not positions or self._last[1].shape[1] != x.shape[1]:
                rot = self.rot[positions][:, None, :]
                if x.shape[0] == 1:  # a decode step: every head's row side by side, a plain multiply
                    rot = np.repeat(rot, x.shape[1], axis=1)  # (half the time of a broadcast one)
                self._last = (positions, rot)
            xc = (x if x.shape[-1] == n else x[..., :n]).view(np.complex64)
            xc *= self._last[1]
            return
        half = n // 2
        if self._last is None or self._last[0] is not positions:
            self._last = (positions, np.stack([self.cos[positions][:, None, :], self.sin[positions][:, None, :]]))
        cos, sin = self._last[1]
        x0 = x[..., :half]
        x1 = x[..., half:n]
        a = x0 * cos
        a -= x1 * sin
        x1 *= cos
        x1 += x0 * sin
        x0[...] = a


def rms_norm(x: F32, weight: F32 | None, eps: float) -> F32:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, in float32 (a new array).

    One row (a decode step of one sequence) takes a BLAS dot and Python arithmetic for
    the scale: 2 NumPy calls instead of 5, 1 more for a weight not folded into the next
    projection (FusedLinear.fold).
    """
    if x.ndim == 2 and x.shape[0] == 1:
        inv = 1.0 / math.sqrt(float(np.vdot(x, x)) / x.shape[1] + eps)
        y1: F32 = np.multiply(x, inv)  # a Python float: float32 arithmetic (NEP 50), faster than f32()
        if weight is not None:
            y1 *= weight
        return y1
    ms = np.einsum("...i,...i->...", x, x)
    ms *= f32(1.0 / x.shape[-1])
    ms += f32(eps)
    np.sqrt(ms, out=ms)
    y: F32 = x / ms[..., None]
    if weight is not None:
        y *= weight
    return y


def silu(x: F32) -> F32:
    """x / (1 + exp(-x)), exp's argument capped at 80 (silu is then -0.0 to float32 precision)
    so it never overflows; float32 exp is SIMD in NumPy, tanh is not."""
    t = np.negative(x)
    np.minimum(t, CAP_80, out=t)
    np.exp(t, out=t)
    t += ONE
    np.divide(x, t, out=t)
    return t


def gelu(x: F32) -> F32:
    """GELU as ggml's CPU backend computes it: a lookup of x rounded to float16 in
    numerics' 65536-entry table (below -10 the table holds -0.0; from 10 on gelu(x) = x)."""
    t: F32 = numerics.gelu_table()[x.astype(f16).view(np.uint16)]
    np.copyto(t, x, where=x >= TEN)
    return t


class FastKernels(Kernels):
    name = "fast"

    def __init__(self, backend: MatmulBackend = DEFAULT_BACKEND) -> None:
        super().__init__(backend)
        self.arena = WeightArena()  # this model's dense weights, in the order they are built

    def project(self, parts: Sequence[Linear], biases: Sequence[F32 | None] | None = None) -> FusedLinear:
        return FusedLinear(parts, biases, self.arena, self.backend)

    def fold(self, proj: Projection, in_scale: F32 | None = None, out_scale: F32 | None = None) -> bool:
        return isinstance(proj, FusedLinear) and proj.fold(in_scale, out_scale)

    def rms_norm(self, x: F32, weight: F32 | None, eps: float) -> F32:
        return rms_norm(x, weight, eps)

    def silu(self, x: F32) -> F32:
        return silu(x)

    def gelu(self, x: F32) -> F32:
        return gelu(x)

    def swiglu(self, gu: F32, n_ff: int) -> F32:
        t = silu(gu[:, :n_ff])
        t *= gu[:, n_ff:]
        return t

    def geglu(self, gu: F32, n_ff: int) -> F32:
        t = gelu(gu[:, :n_ff])
        t *= gu[:, n_ff:]
        return t

    def rope(self, table: RopeTable) -> FastRope:
        return FastRope(table)

    def attention(self, kv: KVCache, batch: Batch, causal: bool) -> AttentionPass:
        return AttentionPlan(kv, batch, causal, self.backend)
