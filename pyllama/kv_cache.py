"""The key/value cache: one preallocated block per layer, split into per-sequence rows.

Each sequence (a server slot) owns `n_ctx_seq` cells; the cell index equals the token's
position, so a sequence's cache is always the contiguous positions 0..len-1. That keeps
attention copy-free (a slice) and makes the operations the server needs simple:
truncate (reuse a cached prefix), copy between sequences, context shift (drop a range and
re-rotate the keys that move), and save/restore.

Storage types follow llama.cpp's `--cache-type-k/-v`: f32, f16 (the default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyllama.errors import ContextFullError, InvalidRequestError

F32 = np.ndarray[Any, np.dtype[np.float32]]

CACHE_TYPES: dict[str, type[np.generic]] = {"f32": np.float32, "f16": np.float16}


def cache_dtype(name: str) -> type[np.generic]:
    try:
        return CACHE_TYPES[name]
    except KeyError:
        raise InvalidRequestError(
            f"unsupported KV cache type {name!r} (supported: {', '.join(CACHE_TYPES)})"
        ) from None


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
    ) -> None:
        self.n_layer, self.n_seq, self.n_ctx_seq = n_layer, n_seq, n_ctx_seq
        self.type_k, self.type_v = type_k, type_v
        dk, dv = cache_dtype(type_k), cache_dtype(type_v)
        self.k = [np.zeros((n_seq, n_head_kv, n_ctx_seq, head_dim), dtype=dk) for _ in range(n_layer)]
        self.v = [np.zeros((n_seq, n_head_kv, n_ctx_seq, head_dim_v), dtype=dv) for _ in range(n_layer)]
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
        t = k.shape[0]
        self.k[layer][seq, :, pos : pos + t, :] = k.transpose(1, 0, 2)
        self.v[layer][seq, :, pos : pos + t, :] = v.transpose(1, 0, 2)

    def commit(self, seq: int, new_length: int) -> None:
        self.lengths[seq] = new_length

    def keys(self, layer: int, seq: int, end: int) -> F32:
        return self.k[layer][seq, :, :end, :].astype(np.float32, copy=False)

    def values(self, layer: int, seq: int, end: int) -> F32:
        return self.v[layer][seq, :, :end, :].astype(np.float32, copy=False)

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
            self.k[layer][dst, :, :n] = self.k[layer][src, :, :n]
            self.v[layer][dst, :, :n] = self.v[layer][src, :, :n]
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
        tail = slice(n_keep + n_discard, n)
        dst = slice(n_keep, n - n_discard)
        for layer in range(self.n_layer):
            moved = self.k[layer][seq, :, tail, :].astype(np.float32)
            self.k[layer][seq, :, dst, :] = rerotate(layer, moved, -n_discard)
            self.v[layer][seq, :, dst, :] = self.v[layer][seq, :, tail, :]
        self.lengths[seq] = n - n_discard

    def seq_state(self, seq: int) -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]]:
        """Copies of the sequence's K and V (for slot save)."""
        self._check_seq(seq)
        n = self.lengths[seq]
        return [k[seq, :, :n].copy() for k in self.k], [v[seq, :, :n].copy() for v in self.v]

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
            self.k[layer][seq, :, :n] = ks[layer]
            self.v[layer][seq, :, :n] = vs[layer]
        self.lengths[seq] = n
