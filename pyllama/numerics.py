"""ggml-compatible arithmetic: reproduce llama.cpp's CPU results bit for bit where it matters.

WHY this exists: a quantized model run by llama.cpp is numerically *chaotic*. ggml
quantizes every activation row to 8 bits before each quantized matmul and keeps K/V, Q
and the attention accumulator in float16, so a difference in the last bit of a float32
(a different summation order, an FMA instead of a multiply and an add) flips a rounding
somewhere, the flip is ~1/127 of an activation, and it grows through the layers. A plain
float32 forward pass lands 0.05-0.09 away from llama.cpp's top-5 probabilities; so does
llama.cpp itself with flash attention switched off. Matching it to 1e-4 needs the same
roundings in the same order. docs/numerics.md has the measurements.

Every function here names the ggml routine it mirrors (ggml-cpu, x86 AVX2 build, the
paths llama.cpp takes on a 2-thread CPU). Sums whose order matters are done in that
order; FMAs are emulated in float64 (exact product, one rounding to float32).

The quantized matmul kernels live in pyllama/exact_matmul.py and the attention replay in
pyllama/flash_attn.py; the `exact` kernel set (pyllama/kernels/exact.py) calls them. They
cost more than BLAS, so they run for small batches (decode, prompts under 64 tokens:
`EXACT_MAX_ROWS`, `EXACT_MAX_KV`) and long prompts fall back to float32 with only the
activation quantization emulated, where ggml itself switches kernels.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Final

import numpy as np
from gguf.constants import GGMLQuantizationType

F32 = np.ndarray[Any, np.dtype[np.float32]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]

T = GGMLQuantizationType
f16, f32, f64 = np.float16, np.float32, np.float64

# Rows (tokens) up to which matmuls use the bit-exact kernels: every batch that ggml's
# float16 flash attention also handles (fewer than 64 rows).
EXACT_MAX_ROWS: Final = 63
# Cached positions up to which attention replays ggml's key-by-key float16 accumulation;
# the replay is a Python loop over keys, so longer contexts take the float32 path.
EXACT_MAX_KV: Final = 1024

QK = 32  # block size of the legacy types and of Q8_0/Q8_1
QK_K = 256  # super-block size of the k-quants and of Q8_K

# Weight type -> the type ggml quantizes the activations to (type_traits_cpu vec_dot_type).
VEC_DOT_TYPE: dict[GGMLQuantizationType, str] = {
    T.Q4_0: "q8_0",
    T.Q5_0: "q8_0",
    T.Q8_0: "q8_0",
    T.IQ4_NL: "q8_0",
    T.Q4_1: "q8_1",
    T.Q5_1: "q8_1",
    T.Q2_K: "q8_k",
    T.Q3_K: "q8_k",
    T.Q4_K: "q8_k",
    T.Q5_K: "q8_k",
    T.Q6_K: "q8_k",
    T.IQ4_XS: "q8_k",
}

def round_f16(x: Any) -> F32:
    """float32 -> nearest float16 (ties to even, like F16C's _mm256_cvtps_ph) -> float32."""
    return np.asarray(x, dtype=f32).astype(f16).astype(f32)


def fma_f32(a: Any, b: Any, c: Any) -> F32:
    """fmaf(a, b, c): the float64 product of two float32 is exact, so one rounding remains."""
    return (np.asarray(a, dtype=f64) * np.asarray(b, dtype=f64) + np.asarray(c, dtype=f64)).astype(f32)


def server_prompt_batches(n_prompt: int, swa: bool, n_ubatch: int = 512) -> list[tuple[int, int]]:
    """The [start, end) prompt batches llama-server decodes for a fresh prompt.

    For models with a sliding-window cache llama-server ends a prompt batch 4 + n_ubatch
    and 4 tokens before the end of the prompt, to save a context checkpoint there
    (tools/server/server-context.cpp, checkpoint_offsets). ggml's kernels depend on the
    batch size, so reproducing llama-server's numbers needs the same cuts.
    """
    if not swa or n_prompt == 0:
        return [(0, n_prompt)]
    cuts = sorted({n_prompt - off for off in (4 + n_ubatch, 4) if 0 < n_prompt - off < n_prompt})
    bounds = [0, *cuts, n_prompt]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


# -- activation quantization (arch/x86/quants.c quantize_row_q8_0 / q8_1) ---------------------


def quantize_q8(x: F32) -> tuple[F32, F32, F32]:
    """Quantize rows of x (T, n) to Q8_0/Q8_1 blocks of 32 as the AVX2 code does.

    Returns (q, d, s): q (T, n/32, 32) integer-valued float32, d (T, n/32) the float16
    scale as float32, s (T, n/32) Q8_1's float16 `d * sum(q)` (d before f16 rounding).
    amax/127 and 127/amax are both float32; x*id is rounded to nearest-even.
    """
    t, n = x.shape
    xb = x.reshape(t, n // QK, QK)
    amax = np.abs(xb).max(axis=-1)
    d = amax / f32(127.0)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, f32(127.0) / amax, f32(0.0)).astype(f32)
    q = np.rint(xb * inv[..., None])
    s = round_f16(d * q.sum(axis=-1, dtype=f32))
    return q, round_f16(d), s


def quantize_q8_k(x: F32) -> tuple[F32, F32]:
    """Quantize rows of x (T, n) to Q8_K super-blocks of 256 (quantize_row_q8_K_ref, and the
    AVX2 ggml_quantize_mat_q8_K_4x8 which gives the same numbers).

    iscale = -127/max where max is the signed value of largest magnitude, q = rint(x*iscale)
    (at most 127), d = 1/iscale in float32 (not float16). Returns q (T, n/256, 256) as
    integer-valued float32 and d (T, n/256).
    """
    t, n = x.shape
    xb = x.reshape(t, n // QK_K, QK_K)
    idx = np.abs(xb).argmax(axis=-1)
    vmax = np.take_along_axis(xb, idx[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore"):
        iscale = np.where(vmax != 0, f32(-127.0) / vmax, f32(0.0)).astype(f32)
        d = np.where(vmax != 0, f32(1.0) / iscale, f32(0.0)).astype(f32)
    q = np.minimum(np.rint(xb * iscale[..., None]), f32(127.0))
    return q, d


def act_quant_dequant(x: F32, qtype: GGMLQuantizationType) -> tuple[F32, F32 | None]:
    """What the activations become after ggml quantizes them for a matmul with `qtype`.

    Returns (x', ds): x' = q*d (exact in float32) and, for Q8_1 partners (Q4_1/Q5_1), the
    per-block correction s - d*sum(q) the weight's min term sees (None otherwise). Used by
    the fast (BLAS) path; for F32/F16 weights nothing is quantized.
    """
    if qtype == T.F16:
        return round_f16(x), None  # ggml converts the activations to the weight's F16
    kind = VEC_DOT_TYPE.get(qtype)
    if kind is None:
        return x, None
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=f32)
    if kind == "q8_k":
        qk, dk = quantize_q8_k(x2)
        return (qk * dk[..., None]).reshape(x2.shape), None
    q, d, s = quantize_q8(x2)
    xq = (q * d[..., None]).reshape(x2.shape)
    if kind == "q8_1":
        return xq, (s - d * q.sum(axis=-1, dtype=f32)).astype(f32)
    return xq, None


# -- elementwise ops ---------------------------------------------------------------------------


def rms_norm(x: F32, weight: F32 | None, eps: float) -> F32:
    """ggml_compute_forward_rms_norm_f32 (+ fused MUL): x*x in float32 summed in double,
    mean rounded to float32, scale = 1/sqrtf(mean+eps), then (x*scale)*w."""
    sq = (x * x).astype(f64)
    mean = (sq.sum(axis=-1) / x.shape[-1]).astype(f32)
    scale = f32(1.0) / np.sqrt(mean + f32(eps))
    y: F32 = x * scale[..., None]
    if weight is not None:
        y = y * weight
    return y


def _hexf(text: str) -> np.float32:
    """A C hex-float constant (0x1.715476p+0f) as float32."""
    return f32(float.fromhex(text))


def v_expf(x: F32) -> F32:
    """ggml_v_expf (vec.h, AVX2+FMA): the polynomial exp that ggml's SIMD silu uses."""
    x = np.asarray(x, dtype=f32)
    r = _hexf("0x1.8p23")
    z = fma_f32(x, _hexf("0x1.715476p0"), r)
    n = z - r
    b = fma_f32(-n, _hexf("0x1.7F7D1Cp-20"), fma_f32(-n, _hexf("0x1.62E4p-1"), x))
    e = z.view(np.int32) << 23
    k = (e + np.array(1.0, dtype=f32).view(np.int32)).view(f32)
    c = np.abs(n) > f32(126)
    u = b * b
    j = fma_f32(
        fma_f32(fma_f32(_hexf("0x1.0E402p-7"), b, _hexf("0x1.573E2Ep-5")), u, fma_f32(_hexf("0x1.555E66p-3"), b, _hexf("0x1.FFFDB6p-2"))),
        u,
        _hexf("0x1.FFFFECp-1") * b,
    )
    out = fma_f32(k, j, k)
    if not c.any():
        return out
    g = np.where(n <= 0, np.int32(-0x7E000000), np.int32(0))  # 0x82000000 as int32
    s1 = (g + np.int32(0x7F000000)).view(f32)
    s2 = (e - g).view(f32)
    dmask = np.abs(n) > f32(192)
    big = np.where(dmask, s1 * s1, fma_f32(s2, j, s2) * s1)
    return np.where(c, big, out).astype(f32)


def silu(x: F32) -> F32:
    """ggml_v_silu: x / (1 + v_expf(-x)) (rows of a multiple of 8; ggml's scalar tail uses expf)."""
    return (x / (f32(1.0) + v_expf(-x))).astype(f32)


def gelu(x: F32) -> F32:
    """GELU (tanh form) as ggml's CPU backend computes it (GGML_GELU_FP16, vec.h).

    x is rounded to float16 and looked up in a 65536-entry table of
    fp16(ggml_gelu_f32(x)); x <= -10 gives 0 and x >= 10 gives x. The table entries are
    0.5f*x*(1+tanhf(SQRT_2_OVER_PI*x*(1+GELU_COEF_A*x*x))) with the inner 1+a*x*x
    contracted to an FMA and a correctly rounded tanhf, which reproduces every entry.
    """
    table = gelu_table()
    y = table[np.asarray(x, dtype=f32).astype(f16).view(np.uint16)]
    return np.where(x <= f32(-10.0), f32(0.0), np.where(x >= f32(10.0), x, y)).astype(f32)


@functools.cache
def gelu_table() -> F32:
    """fp16(ggml_gelu_f32(x)) for every float16 bit pattern x (built on first use)."""
    f = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(f16).astype(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        inner = (f32(0.7978845608028654) * f) * fma_f32(f32(0.044715) * f, f, f32(1.0))
        t = np.tanh(inner.astype(f64)).astype(f32)
        g = (f32(0.5) * f) * (f32(1.0) + t)
    table: F32 = g.astype(f16).astype(f32)
    return table


# -- RoPE (ggml_rope_cache_init / rope_yarn) ---------------------------------------------------


def rope_angles_f32(n_pos: int, n_rot: int, freq_base: float, freq_factors: F32 | None) -> F32:
    """theta[p, i] as ggml computes it: theta_scale = powf(base, -2/n_rot) in float32 and
    theta *= theta_scale iteratively (float32) from theta = p; divided by the freq factor."""
    half = n_rot // 2
    theta_scale = f32(np.power(f64(f32(freq_base)), f64(f32(-2.0) / f32(n_rot))))
    out = np.empty((n_pos, half), dtype=f32)
    theta = np.arange(n_pos, dtype=f32)
    for i in range(half):
        out[:, i] = theta if freq_factors is None else theta / freq_factors[i]
        theta = theta * theta_scale
    return out


# glibc's sincosf (sysdeps/ieee754/flt-32/sincosf.h, s_sinf.c, s_cosf.c; the same numbers
# for sinf, cosf and sincosf), which ggml's RoPE cache calls. Its tables:
_H = float.fromhex
_HPI_INV = _H('0x1.45F306DC9C883p+23')  # 2/pi * 2^24
_HPI = _H('0x1.921FB54442D18p0')  # pi/2
_PI63 = _H('0x1.921FB54442D18p-62')
_C = np.array([[_H('0x1p0'), _H('-0x1.ffffffd0c621cp-2'), _H('0x1.55553e1068f19p-5'), _H('-0x1.6c087e89a359dp-10'), _H('0x1.99343027bf8c3p-16')],
               [-_H('0x1p0'), _H('0x1.ffffffd0c621cp-2'), -_H('0x1.55553e1068f19p-5'), _H('0x1.6c087e89a359dp-10'), -_H('0x1.99343027bf8c3p-16')]])
_S = np.array([_H('-0x1.555545995a603p-3'), _H('0x1.1107605230bc4p-7'), _H('-0x1.994eb3774cf24p-13')])
_SIGN = np.array([1.0, -1.0, -1.0, 1.0])
_INV_PIO4 = np.array([0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529, 0x441529fc, 0x1529fc27, 0x29fc2757, 0xfc2757d1,
            0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0, 0x34ddc0db, 0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041], dtype=np.uint64)
def sincosf(theta: F32) -> tuple[F32, F32]:
    """(sinf, cosf) of float32 angles exactly as glibc computes them (its sincosf).

    WHY: ggml's RoPE cache calls the C library's cosf/sinf (rope_yarn), and glibc's are not
    correctly rounded: ~1 in 10^4 values differs by 1 ulp from float32(cos(float64)). Such
    an ulp can survive the float16 K cache and flip later roundings (measured: SmolLM2 left
    llama.cpp's trajectory after 46 tokens). glibc evaluates in double: |y| < 0.75 (by the
    top 12 bits) a polynomial, |y| < 120 a reduction by n*pi/2 in double, larger ones a
    Payne-Hanek reduction with 4/pi to 192 bits; this replays all three in float64 and
    uint64, so it gives the same numbers everywhere, Pyodide included (checked against the
    real libm in tests/parity/test_numerics.py).
    """
    y = np.asarray(theta, dtype=f32)
    bits = y.view(np.uint32)
    top = (bits >> 20) & 0x7FF
    x = y.astype(f64)
    n = np.zeros(y.shape, dtype=np.int64)
    nswap = np.zeros(y.shape, dtype=np.int64)
    xr = x.copy()
    mid = (top >= 0x3F4) & (top < 0x42F)
    r = x[mid] * _HPI_INV
    nm = ((np.trunc(r).astype(np.int64) + 0x800000) >> 24)
    n[mid] = nm
    nswap[mid] = nm
    xr[mid] = x[mid] - nm * _HPI
    big = top >= 0x42F
    if big.any():
        xi = bits[big].astype(np.uint64)
        sign = (xi >> np.uint64(31)).astype(np.int64)
        idx = ((xi >> np.uint64(26)) & np.uint64(15)).astype(np.int64)
        shift = (xi >> np.uint64(23)) & np.uint64(7)
        xi = ((xi & np.uint64(0xFFFFFF)) | np.uint64(0x800000)) << shift
        with np.errstate(over='ignore'):
            res0 = (xi * _INV_PIO4[idx]) & np.uint64(0xFFFFFFFF)
            res1 = xi * _INV_PIO4[idx + 4]
            res2 = xi * _INV_PIO4[idx + 8]
            res0 = (res2 >> np.uint64(32)) | (res0 << np.uint64(32))
            res0 = res0 + res1
            nb = (res0 + (np.uint64(1) << np.uint64(61))) >> np.uint64(62)
            res0 = res0 - (nb << np.uint64(62))
        xr[big] = res0.view(np.int64).astype(f64) * _PI63
        n[big] = nb.astype(np.int64) + sign  # quadrant incl. the original sign
        nswap[big] = nb.astype(np.int64)
    q = n & 3
    sgn = _SIGN[q]
    tab = ((n & 2) != 0).astype(np.int64)
    xs = xr * sgn
    x2 = xr * xr
    c = _C[tab]
    x4 = x2 * x2
    x3 = x2 * xs
    c2 = c[..., 3] + x2 * c[..., 4]
    s1 = _S[1] + x2 * _S[2]
    c1 = c[..., 0] + x2 * c[..., 1]
    x5 = x3 * x2
    x6 = x4 * x2
    s = xs + x3 * _S[0]
    cc = c1 + x4 * c[..., 2]
    sv = s + x5 * s1
    cv = cc + x6 * c2
    odd = (nswap & 1) == 1
    sin_out = np.where(odd, cv, sv).astype(f32)
    cos_out = np.where(odd, sv, cv).astype(f32)
    tiny = top < 0x398  # |y| < 2^-12
    sin_out[tiny] = y[tiny]
    cos_out[tiny] = 1.0
    return sin_out, cos_out
