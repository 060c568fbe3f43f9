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

The exact kernels cost more than BLAS, so callers use them for small batches (decode,
short prompts: `EXACT_MAX_ROWS`) and fall back to the fast float32 path with only the
activation quantization emulated for long prompts, where ggml itself switches kernels.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType

F32 = np.ndarray[Any, np.dtype[np.float32]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]

T = GGMLQuantizationType
f16, f32, f64 = np.float16, np.float32, np.float64

# Rows (tokens) up to which matmuls use the bit-exact kernels: every batch that ggml's
# float16 flash attention also handles (fewer than 64 rows).
EXACT_MAX_ROWS = 63
# ggml's flash attention switches to a tiled float32 kernel at 64 query rows
# (GGML_FA_TILE_Q); below that it runs the float16 online softmax emulated here.
FA_TILE_Q = 64
# Cached positions up to which attention replays ggml's key-by-key float16 accumulation;
# the replay is a Python loop over keys, so longer contexts take the float32 path.
EXACT_MAX_KV = 1024
# llama.cpp pads the KV view it attends over to 256 cells (llama_kv_cache::get_n_kv); from
# 512 cells on, single-token flash attention splits the keys between the threads
# (use_split_kv_path). llama-server's golden runs used 2 threads.
KV_PAD = 256
FA_SPLIT_KV = 512
GGML_N_THREADS = 2

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


def set_exact(enabled: bool, max_rows: int = 63, max_kv: int = 1024) -> None:
    """Turn the bit-exact replays on (default) or off (float32 with ggml's activation
    quantization only: about 2x faster per token, but top-5 probabilities then drift
    0.03-0.07 from llama.cpp's over a generation; see docs/numerics.md)."""
    global EXACT_MAX_ROWS, EXACT_MAX_KV
    EXACT_MAX_ROWS = max_rows if enabled else 0
    EXACT_MAX_KV = max_kv if enabled else -1


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


def swiglu(gate: F32, up: F32) -> F32:
    """ggml_vec_swiglu_f32: silu(gate) * up."""
    return (silu(gate) * up).astype(f32)


_GELU_TABLE: list[F32] = []


def gelu(x: F32) -> F32:
    """GELU (tanh form) as ggml's CPU backend computes it (GGML_GELU_FP16, vec.h).

    x is rounded to float16 and looked up in a 65536-entry table of
    fp16(ggml_gelu_f32(x)); x <= -10 gives 0 and x >= 10 gives x. The table entries are
    0.5f*x*(1+tanhf(SQRT_2_OVER_PI*x*(1+GELU_COEF_A*x*x))) with the inner 1+a*x*x
    contracted to an FMA and a correctly rounded tanhf, which reproduces every entry.
    """
    if not _GELU_TABLE:
        f = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(f16).astype(f32)
        with np.errstate(over="ignore", invalid="ignore"):
            inner = (f32(0.7978845608028654) * f) * fma_f32(f32(0.044715) * f, f, f32(1.0))
            t = np.tanh(inner.astype(f64)).astype(f32)
            g = (f32(0.5) * f) * (f32(1.0) + t)
        _GELU_TABLE.append(g.astype(f16).astype(f32))
    table = _GELU_TABLE[0]
    y = table[np.asarray(x, dtype=f32).astype(f16).view(np.uint16)]
    return np.where(x <= f32(-10.0), f32(0.0), np.where(x >= f32(10.0), x, y)).astype(f32)


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


_LIBM: list[Any] = []


def libm_sincosf(theta: F32) -> tuple[F32, F32] | None:
    """cosf/sinf of float32 angles from the C library, or None where there is none (Pyodide).

    ggml's RoPE cache calls libm's cosf/sinf (rope_yarn). glibc's are not correctly
    rounded: about 1 value in 10^4 differs by 1 ulp from the float64 cos/sin rounded to
    float32, and such a difference can survive the float16 K cache and flip later roundings
    (measured: SmolLM2 drifted from llama.cpp after 46 tokens). Calling the same library
    reproduces ggml on the same platform. Costs ~1 us per value; RopeTable calls it lazily
    for the positions actually used.
    """
    if not _LIBM:
        fns: tuple[Any, Any] | None = None
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("m")
            if name is not None:
                lib = ctypes.CDLL(name)
                for fn in (lib.cosf, lib.sinf):
                    fn.restype = ctypes.c_float
                    fn.argtypes = [ctypes.c_float]
                fns = (lib.cosf, lib.sinf)
        except (ImportError, OSError, AttributeError):
            fns = None
        _LIBM.append(fns)
    fns = _LIBM[0]
    if fns is None:
        return None
    cosf, sinf = fns
    flat = np.asarray(theta, dtype=f32).reshape(-1).tolist()
    c = np.fromiter((cosf(v) for v in flat), dtype=f32, count=len(flat)).reshape(np.shape(theta))
    s = np.fromiter((sinf(v) for v in flat), dtype=f32, count=len(flat)).reshape(np.shape(theta))
    return c, s


# -- flash attention (ggml_compute_forward_flash_attn_ext_f16_one_chunk) ------------------------


def dot_f16_tree(p: F32) -> F32:
    """Sum the last axis (length a multiple of 32) in ggml_vec_dot_f16's AVX2 order:
    4 accumulators of 8 lanes fed in steps of 32, then GGML_F32x8_REDUCE."""
    n = p.shape[-1]
    b = p.reshape(*p.shape[:-1], n // 32, 4, 8)
    acc = b[..., 0, :, :].copy()
    for i in range(1, n // 32):
        acc += b[..., i, :, :]
    x = (acc[..., 0, :] + acc[..., 2, :]) + (acc[..., 1, :] + acc[..., 3, :])
    t0 = x[..., 0:4] + x[..., 4:8]
    out: F32 = (t0[..., 0] + t0[..., 1]) + (t0[..., 2] + t0[..., 3])
    return out


def use_exact_attention(q: F32, k: F32, v: F32, causal: bool) -> bool:
    """Whether ggml would run its float16 one-chunk flash attention here and we can replay it:
    a causal decoder, fewer than FA_TILE_Q query rows, an F16 KV cache (values exactly
    representable in float16), head sizes that are multiples of 32, and a short context."""
    if not causal or q.shape[0] >= FA_TILE_Q or k.shape[1] > EXACT_MAX_KV:
        return False
    if q.shape[-1] % 32 or k.shape[-1] % 32:
        return False
    return bool(np.array_equal(round_f16(k), k) and np.array_equal(round_f16(v), v))


def flash_attn_f16(
    q: F32,
    k: F32,
    v: F32,
    q_pos: I64,
    k_pos: I64,
    scale: float,
    *,
    window: int = 0,
    softcap: float = 0.0,
) -> F32:
    """ggml's CPU flash attention for an F16 KV cache and fewer than 64 query rows.

    q (T, H, Dh) float32; k (Hkv, S, Dh), v (Hkv, S, Dv) float32 holding float16 values.
    Q is rounded to float16; each score is an f16 dot (ggml_vec_dot_f16 order) times scale;
    keys are visited in cache order with an online softmax whose V accumulator is float16
    (ggml_vec_mad_f16 / ggml_vec_scale_f16: FMA in float32, stored back to float16), the
    running sum S = S*ms + vs is an FMA, and the output is VKQ * (1/S). Masked keys are
    skipped. Returns (T, H*Dv).
    """
    t, h, dh = q.shape
    hkv, s_len, dv = v.shape
    g = h // hkv
    r = g * t
    q16 = round_f16(q).reshape(t, hkv, g, dh).transpose(1, 2, 0, 3).reshape(hkv, r, dh)
    scores = np.empty((hkv, r, s_len), dtype=f32)
    step = max(1, (1 << 20) // max(1, r * dh))
    for j0 in range(0, s_len, step):
        j1 = min(s_len, j0 + step)
        prod = q16[:, :, None, :] * k[:, None, j0:j1, :]  # exact products of float16 values
        scores[:, :, j0:j1] = dot_f16_tree(prod)
    if softcap:
        scores *= f32(scale) / f32(softcap)
        scores = (f32(softcap) * np.tanh(scores.astype(f64)).astype(f32)).astype(f32)
    else:
        scores *= f32(scale)
    diff = q_pos[:, None] - k_pos[None, :]  # (T, S)
    visible = diff >= 0
    if window > 0:
        visible &= diff < window
    vis = np.broadcast_to(visible[None], (g, t, s_len)).reshape(r, s_len)
    n_kv = max(KV_PAD, -(-s_len // KV_PAD) * KV_PAD)  # llama.cpp's padded KV view
    if t == 1 and n_kv >= FA_SPLIT_KV:
        # use_split_kv_path: one chunk of keys per thread, each with its own float16
        # accumulator, merged by ggml_flash_attn_ext_reduce_partials in float32.
        chunk = -(-n_kv // GGML_N_THREADS)
        m_fin = np.full((hkv, r), -np.inf, dtype=f32)
        s_fin = np.zeros((hkv, r), dtype=f32)
        acc_fin = np.zeros((hkv, r, dv), dtype=f32)
        for j0 in range(0, min(s_len, n_kv), chunk):
            j1 = min(s_len, j0 + chunk)
            m_c, s_c, acc_c = _fa_replay(scores[:, :, j0:j1], vis[:, j0:j1], v[:, j0:j1])
            live = s_c != 0
            m_new = np.maximum(m_fin, m_c)
            with np.errstate(invalid="ignore"):
                sc_old = np.exp((m_fin - m_new).astype(f64)).astype(f32)
                sc_new = np.exp((m_c - m_new).astype(f64)).astype(f32)
            # a*b + c*d compiled as fma(a, b, c*d)
            acc_m = fma_f32(acc_fin, sc_old[..., None], acc_c * sc_new[..., None])
            s_m = fma_f32(s_fin, sc_old, s_c * sc_new)
            acc_fin = np.where(live[..., None], acc_m, acc_fin)
            s_fin = np.where(live, s_m, s_fin)
            m_fin = np.where(live, m_new, m_fin)
        acc32, ssum = acc_fin, s_fin
    else:
        _, ssum, acc32 = _fa_replay(scores, vis, v)
    with np.errstate(divide="ignore"):
        inv = np.where(ssum == 0, f32(0.0), f32(1.0) / ssum).astype(f32)
    out = acc32 * inv[..., None]
    return np.ascontiguousarray(out.reshape(hkv, g, t, dv).transpose(2, 0, 1, 3).reshape(t, h * dv))


def _fa_replay(scores: F32, vis: np.ndarray[Any, np.dtype[np.bool_]], v: F32) -> tuple[F32, F32, F32]:
    """One chunk of ggml's online softmax over keys: returns (M, S, VKQ as float32).

    scores (Hkv, R, S), vis (R, S), v (Hkv, S, Dv) float16 values.
    """
    hkv, r, s_len = scores.shape
    dv = v.shape[-1]
    # Everything but the float16 accumulator is vectorized over keys: the running max, which
    # keys raise it ("new": rescale by ms = e^(Mold-M), weight 1) and the weights
    # vs = e^(s-M) of the others; masked keys get weight 0 and change nothing.
    masked = np.where(vis[None], scores, f32(-np.inf))
    run_max = np.maximum.accumulate(masked, axis=-1)
    prev_max = np.concatenate([np.full((hkv, r, 1), -np.inf, dtype=f32), run_max[..., :-1]], axis=-1)
    new = vis[None] & (masked > prev_max)
    with np.errstate(invalid="ignore", over="ignore"):
        ms = np.where(new, np.exp((prev_max - run_max).astype(f64)), 1.0).astype(f32)
        vs = np.where(new, 1.0, np.exp((masked - run_max).astype(f64))).astype(f32)
    vs[~np.broadcast_to(vis[None], vs.shape)] = 0.0
    vs64 = vs.astype(f64)
    any_new = np.asarray(new.any(axis=(0, 1)), dtype=bool)
    # The float16 accumulator and the float32 sum S = S*ms + vs (an FMA), replayed key by key
    # with preallocated buffers: only these roundings are inherently sequential.
    ms64 = ms.astype(f64)
    acc = np.zeros((hkv, r, dv), dtype=f64)  # float16 values
    tmp = np.empty((hkv, r, dv), dtype=f64)
    a32 = np.empty((hkv, r, dv), dtype=f32)
    a16 = np.empty((hkv, r, dv), dtype=f16)
    s64 = np.zeros((hkv, r), dtype=f64)  # float32 values
    stmp = np.empty((hkv, r), dtype=f64)
    s32 = np.zeros((hkv, r), dtype=f32)
    v64 = v.astype(f64)
    for j in np.flatnonzero(vis.any(axis=0)):
        if any_new[j]:
            nj = new[:, :, j]
            scaled = round_f16((acc * ms64[:, :, j, None]).astype(f32))
            acc = np.where(nj[..., None], scaled, acc)
        np.multiply(v64[:, None, j, :], vs64[:, :, j, None], out=tmp)
        np.add(tmp, acc, out=tmp)
        np.copyto(a32, tmp, casting="unsafe")  # the FMA's rounding to float32 ...
        np.copyto(a16, a32, casting="unsafe")  # ... then the store to float16
        np.copyto(acc, a16)
        np.multiply(s64, ms64[:, :, j], out=stmp)
        np.add(stmp, vs64[:, :, j], out=stmp)
        np.copyto(s32, stmp, casting="unsafe")
        np.copyto(s64, s32)
    m_last = run_max[..., -1] if s_len else np.full((hkv, r), -np.inf, dtype=f32)
    return m_last.astype(f32), s32, acc.astype(f32)
