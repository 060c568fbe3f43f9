"""ggml's CPU flash attention, replayed bit for bit (ggml-cpu/ops.cpp).

WHY a replay and not a softmax: for an F16 KV cache and fewer than 64 query rows ggml
rounds Q to float16 and accumulates V in a *float16* online-softmax accumulator, and those
roundings decide llama.cpp's outputs (docs/numerics.md). Used by pyllama.ops.attention
whenever use_exact_attention() says ggml would take this path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyllama import numerics
from pyllama.numerics import F32, I64, f16, f32, f64, fma_f32, round_f16

# ggml's flash attention switches to a tiled float32 kernel at 64 query rows
# (GGML_FA_TILE_Q); below that it runs the float16 online softmax emulated here.
FA_TILE_Q = 64
# llama.cpp pads the KV view it attends over to 256 cells (llama_kv_cache::get_n_kv); from
# 512 cells on, single-token flash attention splits the keys between the threads
# (use_split_kv_path). llama-server's golden runs used 2 threads.
KV_PAD = 256
FA_SPLIT_KV = 512
GGML_N_THREADS = 2


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
    if not causal or q.shape[0] >= FA_TILE_Q or k.shape[1] > numerics.EXACT_MAX_KV:
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
