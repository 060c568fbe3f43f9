"""The key/value cache: one preallocated block per layer, split into per-sequence rows.

Each sequence (a server slot) owns `n_ctx_seq` cells; the cell index equals the token's
position, so a sequence's cache is always the contiguous positions 0..len-1. That keeps
attention copy-free (a slice) and makes the operations the server needs simple:
truncate (reuse a cached prefix), copy between sequences, context shift (drop a range and
re-rotate the keys that move), and save/restore.

Storage types follow llama.cpp's `--cache-type-k/-v`: f32, f16 (the default) and q8_0
(blocks of 32 int8 values sharing one f16 scale, ggml's quantize_row_q8_0: about half the
memory of f16 at a perplexity cost well under 1%).

`widen_f16` (on in fast numerics): an f16 cache stores its float16-rounded values in a
float32 array. The values, and so every result and slot file, are those of the f16
cache; what changes is that attention reads the cache in place instead of converting it.
NumPy 2.4 converts float16 to float32 at ~0.5 G values/s here, so the conversion of every
layer's whole K and V per decoded token grew with the context until it dominated:
SmolLM2 dense, 1 thread, tg at depth 1500 went from 14.6 to 25.3 t/s (depth 0: 37 t/s).
The price is 4 instead of 2 bytes per cached value; pages are only resident once
written, so a large `-c` costs memory only as far as the sequences actually reach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyllama.errors import ContextFullError, InvalidRequestError

F32 = np.ndarray[Any, np.dtype[np.float32]]

CACHE_TYPES: dict[str, type[np.generic] | None] = {"f32": np.float32, "f16": np.float16, "q8_0": None}
Q8_BLOCK = 32
# Bytes one cached element costs, per type (q8_0: 32 int8 + one f16 scale per block).
CACHE_TYPE_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "q8_0": 34.0 / 32.0}


def cache_element_bytes(kind: str, widen_f16: bool = False) -> float:
    """Bytes one cached value takes in memory (an f16 cache widened to float32: 4)."""
    if kind not in CACHE_TYPE_BYTES:
        raise InvalidRequestError(f"unsupported KV cache type {kind!r} (supported: {', '.join(CACHE_TYPES)})")
    return 4.0 if widen_f16 and kind == "f16" else CACHE_TYPE_BYTES[kind]


def cache_dtype(name: str) -> type[np.generic] | None:
    """The NumPy element type of a float cache type, None for q8_0 (stored as blocks)."""
    try:
        return CACHE_TYPES[name]
    except KeyError:
        raise InvalidRequestError(
            f"unsupported KV cache type {name!r} (supported: {', '.join(CACHE_TYPES)})"
        ) from None


class CacheArray:
    """One layer's K (or V) for all sequences: (n_seq, Hkv, n_ctx, D), read back as float32.

    `widen_f16`: an f16 cache held as float32 (values rounded to float16 on the way in),
    so that `get` is a view (see the module docstring).
    """

    def __init__(self, kind: str, n_seq: int, n_head_kv: int, n_ctx: int, dim: int, widen_f16: bool = False) -> None:
        dtype = cache_dtype(kind)
        self.kind = kind
        self.rounds_to_f16 = widen_f16 and kind == "f16"
        if self.rounds_to_f16:
            dtype = np.float32
        if dtype is None:
            if dim % Q8_BLOCK:
                raise InvalidRequestError(
                    f"KV cache type q8_0 needs a head size divisible by {Q8_BLOCK}, this model has {dim} "
                    "(use f16 or f32)"
                )
            self.q: np.ndarray[Any, Any] = np.zeros((n_seq, n_head_kv, n_ctx, dim), dtype=np.int8)
            self.d: np.ndarray[Any, Any] = np.zeros((n_seq, n_head_kv, n_ctx, dim // Q8_BLOCK), dtype=np.float16)
        else:
            self.q = np.zeros((n_seq, n_head_kv, n_ctx, dim), dtype=dtype)
            self.d = np.zeros((n_seq, n_head_kv, n_ctx, 0), dtype=np.float16)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.q.shape)

    @property
    def nbytes(self) -> int:
        return int(self.q.nbytes + self.d.nbytes)

    def set(self, seq: int, start: int, x: F32) -> None:
        """Store x (Hkv, n, D) at positions start..start+n-1."""
        n = x.shape[1]
        if self.kind != "q8_0":
            self.q[seq, :, start : start + n, :] = x.astype(np.float16) if self.rounds_to_f16 else x
            return
        q, d = quantize_q8_0(x)
        self.q[seq, :, start : start + n, :] = q
        self.d[seq, :, start : start + n, :] = d

    def get(self, seq: int, start: int, end: int) -> F32:
        """Positions start..end-1 as float32 (Hkv, n, D); a view when the cache holds float32."""
        q = self.q[seq, :, start:end, :]
        if self.kind != "q8_0":
            return q.astype(np.float32, copy=False)
        d = self.d[seq, :, start:end, :].astype(np.float32)
        blocks = q.reshape(*q.shape[:-1], -1, Q8_BLOCK).astype(np.float32) * d[..., None]
        return blocks.reshape(q.shape)

    def copy_seq(self, src: int, dst: int, n: int) -> None:
        self.q[dst, :, :n] = self.q[src, :, :n]
        self.d[dst, :, :n] = self.d[src, :, :n]


def quantize_q8_0(x: F32) -> tuple[np.ndarray[Any, np.dtype[np.int8]], np.ndarray[Any, np.dtype[np.float16]]]:
    """ggml's quantize_row_q8_0_ref over the last axis: d = max|x| / 127, q = round(x / d)."""
    blocks = x.reshape(*x.shape[:-1], -1, Q8_BLOCK).astype(np.float32, copy=False)
    amax = np.abs(blocks).max(axis=-1)
    d = amax / np.float32(127.0)
    inv = np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d != 0)
    # roundf rounds half away from zero; np.round would round half to even.
    scaled = blocks * inv[..., None]
    q = (np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))).astype(np.int8)
    return q.reshape(x.shape), d.astype(np.float16)


class KVCache:
    """K and V for every layer, shaped (n_seq, Hkv, n_ctx_seq, Dh) so a sequence's keys are a slice."""

    def __init__(
        self,
        n_layer: int,
        n_seq: int,
        n_ctx_seq: int,
        n_head_kv: int,
        head_dim: int,
        head_dim_v: int,
        type_k: str = "f16",
        type_v: str = "f16",
        widen_f16: bool = False,
    ) -> None:
        self.n_layer, self.n_seq, self.n_ctx_seq = n_layer, n_seq, n_ctx_seq
        self.type_k, self.type_v = type_k, type_v
        self.widen_f16 = widen_f16
        self.k = [CacheArray(type_k, n_seq, n_head_kv, n_ctx_seq, head_dim, widen_f16) for _ in range(n_layer)]
        self.v = [CacheArray(type_v, n_seq, n_head_kv, n_ctx_seq, head_dim_v, widen_f16) for _ in range(n_layer)]
        self.lengths = [0] * n_seq

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)

    @property
    def bytes_per_token(self) -> int:
        return self.nbytes // max(1, self.n_seq * self.n_ctx_seq)

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq:
            raise InvalidRequestError(f"sequence id {seq} out of range (0..{self.n_seq - 1})")

    def length(self, seq: int) -> int:
        self._check_seq(seq)
        return self.lengths[seq]

    def used_cells(self) -> int:
        return sum(self.lengths)

    def reserve(self, seq: int, pos: int, n: int) -> None:
        """Check that positions pos..pos+n-1 may be written to `seq` (contiguous, within context)."""
        self._check_seq(seq)
        if pos != self.lengths[seq]:
            raise InvalidRequestError(f"sequence {seq}: batch starts at position {pos}, cache holds {self.lengths[seq]}")
        if pos + n > self.n_ctx_seq:
            raise ContextFullError(
                f"sequence {seq}: {pos + n} tokens exceed the context size of {self.n_ctx_seq}"
            )

    def write(self, layer: int, seq: int, pos: int, k: F32, v: F32) -> None:
        """Store k: (T, Hkv, Dh) and v: (T, Hkv, Dv) at positions pos..pos+T-1."""
        self.k[layer].set(seq, pos, k.transpose(1, 0, 2))
        self.v[layer].set(seq, pos, v.transpose(1, 0, 2))

    def commit(self, seq: int, new_length: int) -> None:
        self.lengths[seq] = new_length

    def keys(self, layer: int, seq: int, end: int) -> F32:
        return self.k[layer].get(seq, 0, end)

    def values(self, layer: int, seq: int, end: int) -> F32:
        return self.v[layer].get(seq, 0, end)

    def truncate(self, seq: int, length: int) -> None:
        """Forget positions >= length (llama_memory_seq_rm(seq, length, -1))."""
        self._check_seq(seq)
        self.lengths[seq] = max(0, min(length, self.lengths[seq]))

    def clear(self, seq: int | None = None) -> None:
        if seq is None:
            self.lengths = [0] * self.n_seq
        else:
            self.truncate(seq, 0)

    def copy(self, src: int, dst: int, length: int | None = None) -> None:
        """Make dst's first `length` positions equal src's (prompt sharing between slots)."""
        self._check_seq(src)
        self._check_seq(dst)
        n = self.lengths[src] if length is None else min(length, self.lengths[src])
        for layer in range(self.n_layer):
            self.k[layer].copy_seq(src, dst, n)
            self.v[layer].copy_seq(src, dst, n)
        self.lengths[dst] = n

    def shift(
        self,
        seq: int,
        n_keep: int,
        n_discard: int,
        rerotate: Callable[[int, F32, int], F32],
    ) -> None:
        """Context shift: drop positions [n_keep, n_keep+n_discard) and slide the rest left.

        Keys were stored already rotated by their old positions, so the moved keys are
        rotated again by -n_discard (`rerotate(layer, keys (Hkv, n, Dh), delta)`), exactly
        as llama.cpp's K-shift does.
        """
        self._check_seq(seq)
        n = self.lengths[seq]
        if n_discard <= 0 or n_keep + n_discard > n:
            return
        for layer in range(self.n_layer):
            moved = self.k[layer].get(seq, n_keep + n_discard, n).copy()
            self.k[layer].set(seq, n_keep, rerotate(layer, moved, -n_discard))
            self.v[layer].set(seq, n_keep, self.v[layer].get(seq, n_keep + n_discard, n).copy())
        self.lengths[seq] = n - n_discard

    def seq_state(self, seq: int) -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]]:
        """Copies of the sequence's K and V as float32 (Hkv, n, D) per layer (for slot save)."""
        self._check_seq(seq)
        n = self.lengths[seq]
        return [k.get(seq, 0, n).copy() for k in self.k], [v.get(seq, 0, n).copy() for v in self.v]

    def set_seq_state(self, seq: int, ks: list[np.ndarray[Any, Any]], vs: list[np.ndarray[Any, Any]]) -> None:
        self._check_seq(seq)
        if len(ks) != self.n_layer or len(vs) != self.n_layer:
            raise InvalidRequestError("saved state has the wrong number of layers")
        n = ks[0].shape[1]
        if n > self.n_ctx_seq:
            raise ContextFullError(f"saved state holds {n} tokens, more than the slot context {self.n_ctx_seq}")
        for layer in range(self.n_layer):
            if ks[layer].shape[::2] != self.k[layer].shape[1::2] or vs[layer].shape[::2] != self.v[layer].shape[1::2]:
                raise InvalidRequestError("saved state does not match this model's cache shape")
            self.k[layer].set(seq, 0, np.asarray(ks[layer], dtype=np.float32))
            self.v[layer].set(seq, 0, np.asarray(vs[layer], dtype=np.float32))
        self.lengths[seq] = n


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share: the part of a prompt a slot's cache can reuse."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n]) != np.asarray(b[:n])
    hit = np.flatnonzero(x)
    return int(hit[0]) if hit.size else n
