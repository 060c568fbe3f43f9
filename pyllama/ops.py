"""The numeric building blocks every architecture composes: norms, RoPE, activations, attention.

Shapes: T = tokens in the batch, D = model width, H = heads, Hkv = key/value heads,
Dh = head dimension, S = cached positions attended to.
"""

from __future__ import annotations

import math
import sys
from typing import Any, cast

import numpy as np

from pyllama import flash_attn, numerics
from pyllama.config import RopeParams

F32 = np.ndarray[Any, np.dtype[np.float32]]

# Pyodide's NumPy has no BLAS: einsum beats matmul there (see docs/performance.md).
USE_EINSUM = sys.platform == "emscripten"
ONE = np.float32(1.0)


def as_f32(a: Any) -> F32:
    """Narrow NumPy's loosely typed results to float32 arrays (a no-op at run time)."""
    return cast(F32, a)


def layer_norm(x: F32, weight: F32 | None, bias: F32 | None, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float32)
    xc = x - mean
    var = np.einsum("...i,...i->...", xc, xc, dtype=np.float32) / np.float32(x.shape[-1])
    out = as_f32(xc * (ONE / np.sqrt(var + np.float32(eps)))[..., None])
    if weight is not None:
        out *= weight
    if bias is not None:
        out += bias
    return out


def softmax(x: F32, axis: int = -1) -> F32:
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    e /= e.sum(axis=axis, keepdims=True)
    return as_f32(e)


def matmul(a: F32, b_t: F32) -> F32:
    """a @ b_t.T with the faster kernel for this platform."""
    if USE_EINSUM:
        return as_f32(np.einsum("...ik,...jk->...ij", a, b_t))
    return as_f32(np.matmul(a, np.swapaxes(b_t, -1, -2)))


class RopeTable:
    """Precomputed cos/sin of RoPE angles for every position, so applying RoPE is two multiplies.

    Follows ggml's rope (ggml-cpu/ops.cpp, ggml_rope_cache_init + rope_yarn) including its
    float32 arithmetic: theta_i = p * theta_scale^i accumulated by repeated float32
    multiplication, scaled by freq_scale, YaRN ramp mixing when ext_factor != 0, and the
    rotation x0*cos - x1*sin contracted into an FMA as the compiled C does, and glibc's
    sinf/cosf (numerics.sincosf). A float64 angle
    table differs from ggml's by up to 1e-3 rad at position 1000.
    """

    def __init__(self, rope: RopeParams, n_pos: int, freq_factors: F32 | None = None) -> None:
        self.rope = rope
        self.n_rot = rope.n_rot
        half = rope.n_rot // 2
        f32 = np.float32
        theta_extrap = numerics.rope_angles_f32(n_pos, rope.n_rot, rope.freq_base, freq_factors)
        theta_interp = f32(rope.freq_scale) * theta_extrap
        mscale = f32(rope.attn_factor)
        if rope.ext_factor != 0.0:
            corr = _yarn_corr_dims(rope.n_rot, rope.n_ctx_orig, rope.freq_base, rope.beta_fast, rope.beta_slow)
            i0 = np.arange(0, half, dtype=np.float32) * f32(2)
            y = (i0 / f32(2) - f32(corr[0])) / f32(max(0.001, corr[1] - corr[0]))
            ramp_mix = ((f32(1) - np.clip(y, f32(0), f32(1))) * f32(rope.ext_factor)).astype(f32)
            theta = theta_interp * (f32(1) - ramp_mix) + theta_extrap * ramp_mix
            mscale = f32(mscale * (f32(1.0) + f32(0.1) * f32(math.log(1.0 / rope.freq_scale))))
        else:
            theta = theta_interp
        sin, cos = numerics.sincosf(theta)  # glibc's, as ggml calls them
        self.cos = as_f32(cos * mscale)
        self.sin = as_f32(sin * mscale)

    def apply(self, x: F32, positions: np.ndarray[Any, np.dtype[np.int64]]) -> F32:
        """Rotate x of shape (T, H, Dh) in place by each row's position; returns x."""
        cos = self.cos[positions][:, None, :]
        sin = self.sin[positions][:, None, :]
        n = self.n_rot
        if self.rope.neox:
            half = n // 2
            x0 = x[..., :half].copy()
            x1 = x[..., half:n].copy()
            x[..., :half] = numerics.fma_f32(x0, cos, -(x1 * sin))
            x[..., half:n] = numerics.fma_f32(x0, sin, x1 * cos)
        else:
            x0 = x[..., 0:n:2].copy()
            x1 = x[..., 1:n:2].copy()
            x[..., 0:n:2] = numerics.fma_f32(x0, cos, -(x1 * sin))
            x[..., 1:n:2] = numerics.fma_f32(x0, sin, x1 * cos)
        return x


def _yarn_corr_dims(n_dims: int, n_ctx_orig: int, base: float, beta_fast: float, beta_slow: float) -> tuple[float, float]:
    def corr_dim(n_rot: float) -> float:
        return n_dims * math.log(n_ctx_orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    start = math.floor(corr_dim(beta_fast))
    end = math.ceil(corr_dim(beta_slow))
    return max(0.0, start), min(n_dims - 1.0, end)


def attention(
    q: F32,
    k: F32,
    v: F32,
    q_pos: np.ndarray[Any, np.dtype[np.int64]],
    k_pos: np.ndarray[Any, np.dtype[np.int64]],
    scale: float,
    *,
    causal: bool = True,
    window: int = 0,
    softcap: float = 0.0,
) -> F32:
    """Grouped-query attention of T queries over S cached keys.

    q: (T, H, Dh); k: (Hkv, S, Dh); v: (Hkv, S, Dv); positions give the causal /
    sliding-window mask (a key is visible when k_pos <= q_pos and q_pos - k_pos < window).
    Returns (T, H * Dv).
    """
    if flash_attn.use_exact_attention(q, k, v, causal):
        return flash_attn.flash_attn_f16(q, k, v, q_pos, k_pos, scale, window=window, softcap=softcap)
    t, h, dh = q.shape
    hkv, s, dv = v.shape
    g = h // hkv
    # (T, Hkv, g, Dh) -> (Hkv, g*T, Dh): queries of one kv head side by side.
    qg = q.reshape(t, hkv, g, dh).transpose(1, 2, 0, 3).reshape(hkv, g * t, dh)
    scores = matmul(qg, k) * np.float32(scale)  # (Hkv, g*T, S)
    if softcap > 0.0:
        scores = np.tanh(scores / np.float32(softcap)) * np.float32(softcap)
    if causal or window > 0:
        diff = q_pos[:, None] - k_pos[None, :]  # (T, S)
        masked = np.zeros(diff.shape, dtype=bool)
        if causal:
            masked |= diff < 0
        if window > 0:
            masked |= diff >= window
        if masked.any():
            scores = scores.reshape(hkv, g, t, s)
            scores[:, :, masked] = -np.inf
            scores = scores.reshape(hkv, g * t, s)
    probs = softmax(scores)
    out = np.matmul(probs, v) if not USE_EINSUM else np.einsum("hts,hsd->htd", probs, v)
    # (Hkv, g, T, Dv) -> (T, Hkv, g, Dv) -> (T, H*Dv)
    return as_f32(out.reshape(hkv, g, t, dv).transpose(2, 0, 1, 3).reshape(t, h * dv).astype(np.float32, copy=False))
