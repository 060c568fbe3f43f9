"""Bit-exact quantized matmuls: ggml's CPU kernels replayed in NumPy, and the Linear that uses them.

WHY: llama.cpp's output depends on the exact float32 rounding of every matmul (see
pyllama/numerics.py and docs/numerics.md); BLAS sums in another order, and those last-bit
differences alone move top-5 probabilities by 0.03-0.07 on SmolLM2. Each kernel here
mirrors one ggml routine on the x86 AVX2 path llama.cpp takes on a 2-thread CPU:

    Q4_0 Q4_1 Q5_0 Q5_1 Q8_0   ggml_vec_dot_qX_q8_Y (and llamafile tinyBLAS_Q0_AVX for
                               several rows, which accumulates the same way)
    Q4_K                       repack.cpp ggml_gemv/gemm_q4_K_8x8_q8_K (weights repacked)
    Q6_K                       ggml_vec_dot_q6_K_q8_K

The integer part of each kernel (codes times activation quants) is exact in float64 and is
formed for all outputs at once with batched matmuls; only the float32 accumulation over
blocks, whose rounding depends on order, is replayed as a short loop over blocks.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType

from pyllama import numerics
from pyllama.gguf_file import TensorInfo
from pyllama.linear import Linear, ScratchPool, WeightMode
from pyllama.numerics import (
    QK,
    QK_K,
    VEC_DOT_TYPE,
    act_quant_dequant,
    quantize_q8,
    quantize_q8_k,
)
from pyllama.quant import DEFAULT_PACKING, PackLayout, legacy
from pyllama.quant.bits import f16_field
from pyllama.quant.layout import BlockArrays
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend

F32 = np.ndarray[Any, np.dtype[np.float32]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
U8 = np.ndarray[Any, np.dtype[np.uint8]]

T = GGMLQuantizationType
f32, f64 = np.float32, np.float64

_LEGACY_UNPACK = {
    T.Q4_0: legacy.q4_0,
    T.Q4_1: legacy.q4_1,
    T.Q5_0: legacy.q5_0,
    T.Q5_1: legacy.q5_1,
    T.Q8_0: legacy.q8_0,
}


def _hsum8(acc: F32) -> F32:
    """hsum_float_8 over the leading axis of 8 lanes: (hi+lo) then (0+2)+(1+3)."""
    r = acc[4:8] + acc[0:4]
    out: F32 = (r[0] + r[2]) + (r[1] + r[3])
    return out


def _fma_fold(acc: F32, prod: F64) -> None:
    """acc = fmaf-accumulate: acc + prod (exact in float64) rounded once to float32, in place.
    (The ufunc adds in float64 and casts the result into the float32 output.)"""
    np.add(acc, prod, out=acc, casting="unsafe")


class ExactLegacyMatmul:
    """Bit-exact y = W x for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights (ggml_vec_dot_qX_q8_Y, AVX2).

    ggml's kernel, per output element: for each block of 32, the integer dot of weight codes
    and activation quants is formed in 8 lanes of 4 products (exact), multiplied by
    d_w*d_x (exact: two float16) and FMA-accumulated into 8 float32 lanes, block after
    block; then hsum_float_8 and, for Q4_1/Q5_1, + sum(m*s) (float32, block order).
    We form the lane sums for all rows at once with one batched matmul over the 8*nb
    lane groups, and replay only the per-block float32 rounding as a loop over blocks.
    """

    def __init__(self, info: TensorInfo) -> None:
        if info.ggml_type not in _LEGACY_UNPACK:
            raise ValueError(f"{info.name}: no exact kernel for {info.ggml_type.name}")
        self.qtype = info.ggml_type
        self.n_out, self.n_in = info.shape
        nb = self.n_in // QK
        self.nb = nb
        blocks = np.asarray(info.data).reshape(self.n_out * nb, -1)
        arr: BlockArrays = _LEGACY_UNPACK[info.ggml_type](blocks)
        codes = arr.codes.reshape(self.n_out, nb * 8, 4)
        # (G, 4, n_out) with G = nb*8 lane groups: the batched matmul wants this order.
        self.codes = np.ascontiguousarray(codes.transpose(1, 2, 0))
        self.d = np.ascontiguousarray(arr.scale.reshape(self.n_out, nb).T, dtype=f32)  # (nb, n_out)
        self.m = (
            None if arr.bias is None else np.ascontiguousarray(arr.bias.reshape(self.n_out, nb).T, dtype=f32)
        )
        self._codes_f32: F32 | None = None

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.d.nbytes + (0 if self.m is None else self.m.nbytes))

    def __call__(self, x: F32) -> F32:
        """x (T, n_in) float32 -> (T, n_out) float32, bit-identical to ggml's mul_mat."""
        t = x.shape[0]
        q, d1, s = quantize_q8(np.ascontiguousarray(x, dtype=f32))
        codes = _scratch_f32(self.codes.shape)
        np.copyto(codes, self.codes)
        out = np.empty((t, self.n_out), dtype=f32)
        step = max(1, 64 // self.nb)  # bounds the float64 temporaries
        for r0 in range(0, t, step):
            r1 = min(t, r0 + step)
            out[r0:r1] = self._rows(q[r0:r1], d1[r0:r1], s[r0:r1], codes)
        return out

    def _rows(self, q: F32, d1: F32, s: F32, codes: F32) -> F32:
        t = q.shape[0]
        nb, n_out = self.nb, self.n_out
        xg = np.ascontiguousarray(q.reshape(t, nb * 8, 4).transpose(1, 0, 2))  # (G, T, 4)
        isum = np.matmul(xg, codes).reshape(nb, 8, t, n_out)  # exact integers
        dd = d1.T[:, :, None] * self.d[:, None, :]  # (nb, T, n_out), exact (f16*f16)
        p = np.multiply(isum, dd[:, None], dtype=f64)  # exact products
        acc = p[0].astype(f32)  # first FMA onto 0: one rounding
        for b in range(1, nb):
            _fma_fold(acc, p[b])
        y = _hsum8(acc)
        if self.m is not None:
            ms = s.T[:, :, None] * self.m[:, None, :]  # (nb, T, n_out), exact (f16*f16)
            summs = ms[0].copy()
            for b in range(1, nb):
                summs += ms[b]
            y = y + summs
        return y.astype(f32, copy=False)


_local = threading.local()


def _scratch_f32(shape: tuple[int, ...]) -> F32:
    """A float32 work buffer of `shape`, reused across calls (one per thread)."""
    n = int(np.prod(shape))
    buf: F32 | None = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = np.empty(n, dtype=f32)
        _local.buf = buf
    return buf[:n].reshape(shape)


class ExactQ4KMatmul:
    """Bit-exact y = W x for Q4_K weights, as llama.cpp runs them on AVX2: repacked into
    block_q4_Kx8 and multiplied by ggml_gemv_q4_K_8x8_q8_K / ggml_gemm_q4_K_8x8_q8_K.

    Per output and super-block: isum = sum_j sc_j * dot(q4, q8) and imin = sum_j m_j *
    bsum_j are exact integers (one lane per output); then acc += float(isum) * (d*d8) and
    accmin += float(imin) * (dmin*d8), each an FMA with the scale product rounded to
    float32, and y = acc - accmin.
    """

    def __init__(self, info: TensorInfo) -> None:
        self.n_out, self.n_in = info.shape
        nb = self.n_in // QK_K
        self.nb = nb
        blocks = np.asarray(info.data).reshape(self.n_out * nb, 144)
        d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)
        sc, mn = _scale_min_k4(blocks[:, 4:16])
        lo = blocks[:, 16:144].reshape(-1, 4, 32)
        q = np.concatenate([(lo & 0x0F)[:, :, None, :], (lo >> 4)[:, :, None, :]], axis=2).reshape(-1, QK_K)
        w = q.reshape(-1, 8, 32).astype(np.int16) * sc.astype(np.int16)[:, :, None]  # sc_j * q, <= 945
        # (nb, 256, n_out) int16 for the per-super-block matmul; scales (nb, n_out).
        self.w = np.ascontiguousarray(w.reshape(self.n_out, nb, QK_K).transpose(1, 2, 0))
        self.mins = np.ascontiguousarray(mn.reshape(self.n_out, nb, 8).transpose(1, 2, 0), dtype=f64)
        self.d = np.ascontiguousarray(d.reshape(self.n_out, nb).T, dtype=f32)
        self.dmin = np.ascontiguousarray(dmin.reshape(self.n_out, nb).T, dtype=f32)

    @property
    def nbytes(self) -> int:
        return int(self.w.nbytes + self.mins.nbytes + self.d.nbytes + self.dmin.nbytes)

    def __call__(self, x: F32) -> F32:
        """ggml sends rows in groups of 4 to the gemm kernel, which FMA-accumulates every 64
        weights (two sub-blocks), and the T % 4 rows left over to the gemv kernel, which
        accumulates once per super-block of 256."""
        t = x.shape[0]
        q, d8 = quantize_q8_k(np.ascontiguousarray(x, dtype=f32))  # (T, nb, 256), (T, nb)
        n4 = t - t % 4
        out = np.empty((t, self.n_out), dtype=f32)
        for r0, r1, chunk in ((0, n4, 64), (n4, t, QK_K)):
            for c0 in range(r0, r1, 8):  # bounds the float64 temporaries
                c1 = min(r1, c0 + 8)
                out[c0:c1] = self._rows(q[c0:c1], d8[c0:c1], chunk)
        return out

    def _rows(self, q: F32, d8: F32, chunk: int) -> F32:
        t, nb = q.shape[0], self.nb
        per = QK_K // chunk  # accumulation steps per super-block
        n_steps = nb * per
        # Partial sums over 64 weights stay below 2^24 (|sc*q| <= 945, |q8| <= 127), so float32
        # matmuls over 64-wide pieces are exact; pieces are added in float64.
        pieces = chunk // 64
        xq = np.ascontiguousarray(q.reshape(t, n_steps * pieces, 64).transpose(1, 0, 2))  # (S*P, T, 64)
        w = _scratch_f32(self.w.shape)
        np.copyto(w, self.w)
        part = np.matmul(xq, w.reshape(n_steps * pieces, 64, self.n_out)).reshape(n_steps, pieces, t, self.n_out)
        isum = part.sum(axis=1, dtype=f64).astype(f32) if pieces > 1 else part[:, 0]  # int32 -> float
        bsum = xq.reshape(n_steps, pieces, t, 2, 32).sum(axis=-1, dtype=f64)  # (S, P, T, 2)
        bsum = bsum.transpose(0, 2, 1, 3).reshape(n_steps, t, chunk // 32)  # (S, T, sub-blocks)
        mins = self.mins.reshape(nb, per, chunk // 32, self.n_out).reshape(n_steps, chunk // 32, self.n_out)
        imin = np.matmul(bsum, mins).astype(f32)
        acc = np.zeros((t, self.n_out), dtype=f32)
        accm = np.zeros((t, self.n_out), dtype=f32)
        for step in range(n_steps):
            b = step // per
            rd = d8[:, b][:, None]
            _fma_fold(acc, isum[step].astype(f64) * (self.d[b][None, :] * rd).astype(f64))
            _fma_fold(accm, imin[step].astype(f64) * (self.dmin[b][None, :] * rd).astype(f64))
        out: F32 = acc - accm
        return out


def _scale_min_k4(scales: U8) -> tuple[U8, U8]:
    """Q4_K's 12 scale bytes -> eight 6-bit scales and eight 6-bit mins (get_scale_min_k4)."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


class ExactQ6KMatmul:
    """Bit-exact y = W x for Q6_K weights (ggml_vec_dot_q6_K_q8_K, AVX2).

    Per super-block, 8 int32 lanes: lane l gets sc*q6*q8 over the elements 4l..4l+3 of
    each 32-element chunk, minus 32*sum(sc*bsum) over sub-blocks 2l, 2l+1; then
    acc_l += (d8*d) * float(lane) as an FMA (d8*d rounded to float32) and y = hsum_float_8.
    """

    def __init__(self, info: TensorInfo) -> None:
        self.n_out, self.n_in = info.shape
        nb = self.n_in // QK_K
        self.nb = nb
        blocks = np.asarray(info.data).reshape(self.n_out * nb, 210)
        ql = blocks[:, 0:128].reshape(-1, 2, 64)
        qh = blocks[:, 128:192].reshape(-1, 2, 32)
        # element order (dequantize_row_q6_K): per half of 128, four runs of 32.
        low = np.concatenate([ql[:, :, :32] & 0x0F, ql[:, :, 32:] & 0x0F, ql[:, :, :32] >> 4, ql[:, :, 32:] >> 4], axis=2)
        high = np.concatenate([qh & 3, (qh >> 2) & 3, (qh >> 4) & 3, (qh >> 6) & 3], axis=2)
        q6 = (low | (high << 4)).reshape(-1, QK_K).astype(np.int16)  # unsigned 0..63
        sc = blocks[:, 192:208].view(np.int8).astype(np.int16)  # (n*nb, 16)
        w = (q6.reshape(-1, 16, 16) * sc[:, :, None]).reshape(self.n_out, nb, 8, 8, 4)  # (o, b, c, l, k)
        # lane groups (nb, 8 lanes, 32 = (c, k)) x n_out
        self.w = np.ascontiguousarray(w.transpose(1, 3, 2, 4, 0).reshape(nb, 8, 32, self.n_out))
        self.sc = np.ascontiguousarray(sc.reshape(self.n_out, nb, 16).transpose(1, 2, 0), dtype=f64)  # (nb, 16, o)
        self.d = np.ascontiguousarray(f16_field(blocks, 208).reshape(self.n_out, nb).T, dtype=f32)

    @property
    def nbytes(self) -> int:
        return int(self.w.nbytes + self.sc.nbytes + self.d.nbytes)

    def __call__(self, x: F32) -> F32:
        t = x.shape[0]
        nb, n_out = self.nb, self.n_out
        q, d8 = quantize_q8_k(np.ascontiguousarray(x, dtype=f32))
        # Each lane sums 32 products up to 8001*127; halves of 16 stay below 2^24, so two exact
        # float32 matmuls, added in float64.
        qb = q.reshape(t, nb, 2, 4, 8, 4).transpose(1, 4, 2, 0, 3, 5).reshape(nb * 8 * 2, t, 16)  # (b, l, half, T, 16)
        w = _scratch_f32(self.w.shape)
        np.copyto(w, self.w)
        half = np.matmul(np.ascontiguousarray(qb), w.reshape(nb * 8 * 2, 16, n_out)).reshape(nb, 8, 2, t, n_out)
        a = half.sum(axis=2, dtype=f64)  # (nb, 8, T, n_out)
        bsum16 = q.reshape(t, nb, 16, 16).sum(axis=-1, dtype=f64)  # (T, nb, 16)
        # lane l subtracts 32 * (sc[2l]*bsum[2l] + sc[2l+1]*bsum[2l+1])
        prod = bsum16.transpose(1, 2, 0)[:, :, :, None] * self.sc[:, :, None, :]  # (nb, 16, T, o)
        sub = 32.0 * prod.reshape(nb, 8, 2, t, n_out).sum(axis=2)
        lanes = (a - sub).astype(f32)  # int32 -> float rounding
        acc = np.zeros((8, t, n_out), dtype=f32)
        for b in range(nb):
            dd = (d8[:, b][:, None] * self.d[b][None, :]).astype(f64)  # (T, o)
            _fma_fold(acc, lanes[b].astype(f64) * dd[None])
        return _hsum8(acc)


HEAD_TENSORS = frozenset({"output.weight", "token_embd.weight"})


ExactKernel = ExactLegacyMatmul | ExactQ4KMatmul | ExactQ6KMatmul


def exact_kernel_for(info: TensorInfo) -> ExactKernel | None:
    """The bit-exact kernel for this weight, or None when its type has none yet."""
    if len(info.shape) != 2:
        return None
    if info.ggml_type in _LEGACY_UNPACK and info.shape[1] % QK == 0:
        return ExactLegacyMatmul(info)
    if info.ggml_type == T.Q4_K and info.shape[1] % QK_K == 0:
        return ExactQ4KMatmul(info)
    if info.ggml_type == T.Q6_K and info.shape[1] % QK_K == 0:
        return ExactQ6KMatmul(info)
    return None


class GgmlLinear(Linear):
    """A Linear whose products round like ggml's CPU matmul (the `exact` kernel set's weights).

    Small batches (decode, short prompts) use the bit-exact kernel when the weight type has
    one; otherwise the activations are quantized exactly as ggml does (Q8_0/Q8_1 blocks,
    float16 for F16 weights) and multiplied with BLAS, which leaves only float32 summation
    order differences (~1e-7 relative).
    """

    def __init__(
        self, info: TensorInfo, mode: WeightMode = "dense", scratch: ScratchPool | None = None, *,
        layout: PackLayout = DEFAULT_PACKING, backend: MatmulBackend = DEFAULT_BACKEND,
    ) -> None:
        super().__init__(info, mode, scratch, layout=layout, backend=backend)
        # The output head's logits feed no later rounding, and the vocabulary is big (exact
        # kernels for Gemma's 262k x 640 head would cost 4x the rest of the model).
        self.exact: ExactKernel | None = None if info.name in HEAD_TENSORS else exact_kernel_for(info)
        # Q4_1/Q5_1 block mins for the Q8_1 activation sums, decoded on first use (only
        # batches too big for the exact kernel read them).
        self._mins: F32 | None = None
        self._mins_built = VEC_DOT_TYPE.get(info.ggml_type) != "q8_1"

    @property
    def mins(self) -> F32 | None:
        if not self._mins_built:
            nb = self.n_in // QK
            blocks = np.asarray(self.info.data).reshape(self.n_out * nb, -1)
            bias = _LEGACY_UNPACK[self.info.ggml_type](blocks).bias
            assert bias is not None
            self._mins, self._mins_built = np.ascontiguousarray(bias.reshape(self.n_out, nb), dtype=f32), True
        return self._mins

    @property
    def exact_nbytes(self) -> int:
        """Memory of the exact kernel's codes."""
        return self.exact.nbytes if self.exact is not None else 0

    def __call__(self, x: F32, out: F32 | None = None) -> F32:
        if x.shape[-1] != self.n_in:
            raise ValueError(f"{self.info.name}: input width {x.shape[-1]} != {self.n_in}")
        x2 = np.ascontiguousarray(x.reshape(-1, self.n_in), dtype=f32)
        rows = x2.shape[0]
        shape = (*x.shape[:-1], self.n_out)
        if rows <= numerics.EXACT_MAX_ROWS and self.exact is not None:
            y = self.exact(x2)
        else:
            xq, ds = act_quant_dequant(x2, self.info.ggml_type)
            y = super().__call__(xq)
            if ds is not None and self.mins is not None:
                y += ds @ self.mins.T
        if out is not None:
            out[...] = y.reshape(shape)
            return out
        return y.reshape(shape)
