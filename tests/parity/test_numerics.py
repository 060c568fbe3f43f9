"""The vectorized ggml replays against straightforward scalar transcriptions of ggml's C.

The golden tests prove the replays on two real models; these pin each kernel on random
data (including shapes those models never hit: the split-KV attention path, Q8_0 and
Q4_1 rows, masked keys) so a faster vectorization that changes one rounding fails here
first, in milliseconds. The references below follow the C loops line by line, with
float64 arithmetic plus an explicit rounding wherever the C code has an FMA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize

from pyllama.exact_matmul import ExactLegacyMatmul
from pyllama.flash_attn import flash_attn_f16
from pyllama.gguf_file import TensorInfo
from pyllama.numerics import quantize_q8, server_prompt_batches

f16, f32, f64 = np.float16, np.float32, np.float64
A = np.ndarray[Any, Any]


def fma(a: Any, b: Any, c: Any) -> np.float32:
    return f32(f64(a) * f64(b) + f64(c))


def ref_vec_dot(wq: A, wd: A, wm: A | None, xq: A, xd: A, xs: A) -> float:
    """ggml_vec_dot_q4_1_q8_1 / _q8_0_q8_0 (AVX2): 8 lanes of 4 products, FMA per block."""
    acc = [f32(0)] * 8
    summs = f32(0)
    for b in range(wq.shape[0]):
        dd = f32(wd[b] * xd[b])
        if wm is not None:
            summs = f32(summs + f32(wm[b] * xs[b]))
        for lane in range(8):
            isum = sum(int(wq[b, 4 * lane + k]) * int(xq[b, 4 * lane + k]) for k in range(4))
            acc[lane] = fma(dd, f32(isum), acc[lane])
    r = [f32(acc[4 + i] + acc[i]) for i in range(4)]
    return float(f32(f32(f32(r[0] + r[2]) + f32(r[1] + r[3])) + summs))


@pytest.mark.parametrize("qtype", [GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0])
def test_legacy_kernel_matches_scalar_vec_dot(qtype: GGMLQuantizationType) -> None:
    rng = np.random.default_rng(1)
    n_out, n_in = 8, 128
    w = rng.standard_normal((n_out, n_in)).astype(f32)
    raw = quantize(w, qtype)
    data = raw.reshape(-1).view(np.uint8)
    info = TensorInfo("w", qtype, (n_out, n_in), 0, data.size, data)
    kernel = ExactLegacyMatmul(info)
    x = (rng.standard_normal((3, n_in)) * 3).astype(f32)
    got = kernel(x)
    q, d, s = quantize_q8(x)
    nb = n_in // 32
    blocks = raw.reshape(n_out, nb, -1)
    for o in range(n_out):
        wd = blocks[o, :, 0:2].copy().view(f16)[:, 0].astype(f32)
        if qtype == GGMLQuantizationType.Q4_1:
            wm = blocks[o, :, 2:4].copy().view(f16)[:, 0].astype(f32)
            nib = blocks[o, :, 4:20]
            wq = np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.int32)
        else:
            wm = None
            wq = blocks[o, :, 2:34].view(np.int8).astype(np.int32)
        for t in range(x.shape[0]):
            want = ref_vec_dot(wq, wd, wm, q[t], d[t], s[t])
            assert got[t, o] == want, (o, t, got[t, o], want)


def ref_flash_attn_row(q: A, k: A, v: A, visible: A, scale: float, lo: int, hi: int) -> tuple[float, float, A]:
    """ggml_compute_forward_flash_attn_ext_f16_one_chunk for one query row and keys [lo, hi)."""
    q16 = q.astype(f16).astype(f32)
    m, s = f32(-np.inf), f32(0)
    acc = np.zeros(v.shape[1], dtype=f16)
    for j in range(lo, hi):
        if not visible[j]:
            continue
        prod = (q16 * k[j]).reshape(-1, 4, 8)  # ggml_vec_dot_f16: 4 accumulators x 8 lanes
        a = prod[0].copy()
        for i in range(1, prod.shape[0]):
            a = (a + prod[i]).astype(f32)
        x = ((a[0] + a[2]) + (a[1] + a[3])).astype(f32)
        t0 = (x[0:4] + x[4:8]).astype(f32)
        sc = f32(f32((t0[0] + t0[1]) + (t0[2] + t0[3])) * f32(scale))
        ms, vs = f32(1), f32(1)
        if sc > m:
            m_old, m = m, sc
            ms = f32(np.exp(f64(m_old - m)))
            acc = (acc.astype(f32) * ms).astype(f16)
        else:
            vs = f32(np.exp(f64(sc - m)))
        acc = (acc.astype(f64) + v[j].astype(f64) * f64(vs)).astype(f32).astype(f16)
        s = fma(s, ms, vs)
    return float(m), float(s), acc.astype(f32)


@pytest.mark.parametrize("n_keys", [20, 300])
def test_flash_attention_matches_scalar_online_softmax(n_keys: int) -> None:
    rng = np.random.default_rng(2)
    h, hkv, dh = 4, 2, 64
    t = 1 if n_keys > 256 else 3
    q = (rng.standard_normal((t, h, dh)) * 2).astype(f32)
    k = rng.standard_normal((hkv, n_keys, dh)).astype(f16).astype(f32)
    v = rng.standard_normal((hkv, n_keys, dh)).astype(f16).astype(f32)
    q_pos = np.arange(n_keys - t, n_keys, dtype=np.int64)
    k_pos = np.arange(n_keys, dtype=np.int64)
    got = flash_attn_f16(q, k, v, q_pos, k_pos, 0.125, window=n_keys - 5).reshape(t, h, dh)
    # llama.cpp attends over a view padded to 256 cells; from 512 on, a single query row is
    # split between the 2 threads (use_split_kv_path) and the partials merged in float32.
    n_kv = max(256, -(-n_keys // 256) * 256)
    chunks = [(0, n_keys)] if t > 1 or n_kv < 512 else [(0, n_kv // 2), (n_kv // 2, n_keys)]
    for row in range(t):
        visible = (q_pos[row] >= k_pos) & (q_pos[row] - k_pos < n_keys - 5)
        for head in range(h):
            kv = head // (h // hkv)
            m_f, s_f, acc_f = f32(-np.inf), f32(0), np.zeros(dh, dtype=f32)
            for lo, hi in chunks:
                m_c, s_c, acc_c = ref_flash_attn_row(q[row, head], k[kv], v[kv], visible, 0.125, lo, hi)
                if s_c == 0:
                    continue
                m_new = max(m_f, f32(m_c))
                so, sn = f32(np.exp(f64(m_f - m_new))), f32(np.exp(f64(f32(m_c) - m_new)))
                acc_f = np.array([fma(a, so, f32(c * sn)) for a, c in zip(acc_f, acc_c, strict=True)], dtype=f32)
                s_f, m_f = fma(s_f, so, f32(f32(s_c) * sn)), m_new
            want = acc_f * f32(f32(1) / s_f)
            np.testing.assert_array_equal(got[row, head], want)


def test_server_prompt_batches_follow_llama_server_checkpoints() -> None:
    # Without a sliding-window cache the prompt is one batch.
    assert server_prompt_batches(10, swa=False) == [(0, 10)]
    # With one, batches end 4 + n_ubatch and 4 tokens before the end of the prompt.
    assert server_prompt_batches(6, swa=True) == [(0, 2), (2, 6)]
    assert server_prompt_batches(4, swa=True) == [(0, 4)]
    assert server_prompt_batches(600, swa=True, n_ubatch=512) == [(0, 84), (84, 596), (596, 600)]


def test_ggml_linear_takes_the_exact_kernel_for_small_batches() -> None:
    """Up to EXACT_MAX_ROWS rows the bit-exact kernel; above, ggml's activation rounding and BLAS."""
    from pyllama import numerics
    from pyllama.exact_matmul import GgmlLinear

    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 64)).astype(f32)
    raw = quantize(w, GGMLQuantizationType.Q4_1).reshape(-1).view(np.uint8)
    lin = GgmlLinear(TensorInfo("blk.0.attn_q.weight", GGMLQuantizationType.Q4_1, (16, 64), 0, raw.size, raw))
    assert lin.exact is not None
    x = rng.standard_normal((numerics.EXACT_MAX_ROWS + 1, 64)).astype(f32)
    small = lin(x[:2])
    np.testing.assert_array_equal(small, lin.exact(x[:2]))
    big = lin(x)  # BLAS order: equal to ~1e-6, not bit for bit in general
    np.testing.assert_allclose(big[:2], small, rtol=1e-5, atol=1e-5)


def test_sincosf_matches_the_c_library() -> None:
    """numerics.sincosf replays glibc's sincosf; check it against the real one when present."""
    import ctypes
    import ctypes.util

    from pyllama.numerics import rope_angles_f32, sincosf

    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no C math library to compare with")
    lib = ctypes.CDLL(name)
    for fn in (lib.sinf, lib.cosf):
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float]
    rng = np.random.default_rng(4)
    theta = np.concatenate(
        [
            rope_angles_f32(600, 64, 100000.0, None).ravel(),  # SmolLM2's RoPE angles
            (rng.standard_normal(20000) * 3).astype(f32),  # all three reduction paths, both signs
            (rng.standard_normal(20000) * 3000).astype(f32),
        ]
    )
    got_sin, got_cos = sincosf(theta)
    want_sin = np.array([lib.sinf(float(v)) for v in theta], dtype=f32)
    want_cos = np.array([lib.cosf(float(v)) for v in theta], dtype=f32)
    np.testing.assert_array_equal(got_sin, want_sin)
    np.testing.assert_array_equal(got_cos, want_cos)
    # ... and that this matters: correctly rounded values differ somewhere.
    assert (np.sin(theta.astype(f64)).astype(f32) != want_sin).any()
