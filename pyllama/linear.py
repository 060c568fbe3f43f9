"""A weight matrix in its compute layout.

Two modes (docs/performance.md has their speed and memory):
- `dense` dequantizes once into a contiguous float32 (n_out, n_in) array: BLAS speed,
  4 bytes per parameter.
- `packed` keeps the repacked quantized arrays (pyllama.quant.grouped: int8 codes,
  1.06-1.25 bytes per parameter; the "nibbles" packing layout holds 4-bit types at
  0.69-0.75 for ~15% more time per token, "compact" at the file's own size for ~1.5x)
  and multiplies one cache-sized tile at a time through a scratch
  buffer that ALL packed Linear objects of a thread share, so a forward pass allocates
  no weight-sized memory.

The matmul kernel (BLAS `@` on CPython, `np.einsum` under Pyodide: pyllama.quant.matmul)
and the packing layout are values each Linear is built with (a model's Weights pass its
own), never process-wide switches.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Literal

import numpy as np

from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.gguf_file import TensorInfo
from pyllama.quant import DEFAULT_PACKING, PackedTensor, PackLayout, dequantize, repack
from pyllama.quant.layout import FloatValues
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, checked_backend, matmul_t

__all__ = [
    "DEFAULT_BACKEND",
    "Linear",
    "MatmulBackend",
    "ScratchPool",
    "WeightMode",
    "default_scratch",
    "matmul_t",
]

F32 = np.ndarray[Any, np.dtype[np.float32]]
WeightMode = Literal["dense", "packed"]


class ScratchPool:
    """One float32 buffer, grown to the largest tile ever requested and then reused.

    Packed Linear objects dequantize into it right before their matmul; nothing keeps a
    reference to its contents afterwards, so sharing it across all layers is safe in the
    engine's single-threaded forward pass.
    """

    def __init__(self) -> None:
        self._buf: F32 = np.empty(0, dtype=np.float32)

    def get(self, n: int) -> F32:
        """A flat float32 view of at least `n` elements (contents undefined)."""
        if n > self._buf.size:
            _raise_mmap_threshold()
            self._buf = np.empty(n, dtype=np.float32)
        return self._buf[:n]

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes)


@functools.cache
def _raise_mmap_threshold() -> None:
    """Free one untouched 16 MiB block, once, when the first packed matmul runs.

    WHY: glibc serves blocks above its mmap threshold (128 KiB at start) with a fresh
    mmap each time, and raises the threshold to the size of any such block freed. Loading
    packed weights tile by tile now frees no big temporaries, so the threshold stayed low
    and every activation of a prompt (0.5-4 MiB each) was a new mmap whose pages faulted
    in, which slowed prompts measurably (docs/performance.md). Freeing this block (never written, so
    never resident) moves the threshold to 16 MiB after the weights exist, so they were
    still placed without heap fragmentation while activations reuse heap memory.
    Only on Linux: under Pyodide the block would grow the WebAssembly memory for good.
    """
    if sys.platform == "linux":
        block = np.empty(16 << 20, dtype=np.uint8)
        del block


_per_thread = threading.local()


def default_scratch() -> ScratchPool:
    """The pool shared by every Linear created without one, one per thread.

    The engine itself never runs two forward passes at once, but a server holding two
    models may drive them from two threads; they must not dequantize into one buffer.
    """
    pool: ScratchPool | None = getattr(_per_thread, "pool", None)
    if pool is None:
        pool = _per_thread.pool = ScratchPool()
    return pool


class Linear:
    """y = x @ W.T for a GGUF weight W of shape (n_out, n_in), in plain float32 (the `fast`
    kernel set's weights; pyllama.exact_matmul.GgmlLinear rounds like ggml instead)."""

    def __init__(
        self, info: TensorInfo, mode: WeightMode = "dense", scratch: ScratchPool | None = None, *,
        layout: PackLayout = DEFAULT_PACKING, backend: MatmulBackend = DEFAULT_BACKEND,
    ) -> None:
        if mode not in ("dense", "packed"):
            raise ModelLoadError(f"tensor {info.name}: unknown weight mode {mode!r} (expected dense or packed)")
        if len(info.shape) != 2:
            raise ModelLoadError(f"tensor {info.name}: a linear weight must be 2-D, got shape {info.shape}")
        self.info = info
        self.mode = mode
        self.n_out, self.n_in = info.shape
        self.scratch = scratch  # None: default_scratch() of the calling thread
        self.layout = layout  # how packed mode holds block types (pyllama.quant.PackLayout)
        self.backend = checked_backend(backend)
        self.weight: F32 | None = None
        self.packed: PackedTensor | None = None
        try:
            if mode == "dense":
                self.weight = dequantize(info.data, info.ggml_type, info.shape)
            else:
                packed = repack(info.data, info.ggml_type, info.shape, layout=layout)
                if isinstance(packed, FloatValues) and packed.values.dtype == np.float32:
                    self.weight = packed.values  # F32 file data is already the compute layout
                else:
                    self.packed = packed
        except ModelLoadError as e:
            raise ModelLoadError(f"tensor {info.name}: {e}") from None

    def dense_weight(self) -> F32:
        """W as float32 (n_out, n_in); a fresh array in packed mode (callers may keep it)."""
        if self.weight is not None:
            return self.weight
        assert self.packed is not None
        out = np.empty((self.n_out, self.n_in), dtype=np.float32)
        self.packed.dequantize_into(out)
        return out

    def __call__(self, x: F32, out: F32 | None = None) -> F32:
        """x (L, n_in) or (n_in,) float32 -> (L, n_out) or (n_out,).

        `out`, if given, is a C-contiguous float32 array of the result's shape to write
        into (no allocation per call on the hot path).
        """
        if x.shape[-1] != self.n_in:
            raise ValueError(f"{self.info.name}: input width {x.shape[-1]} != {self.n_in}")
        x2 = np.ascontiguousarray(x.reshape(-1, self.n_in), dtype=np.float32)
        shape = (*x.shape[:-1], self.n_out)
        if out is not None and (out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous):
            raise ValueError(f"{self.info.name}: out must be C-contiguous float32 {shape}, got {out.dtype} {out.shape}")
        y = np.empty((x2.shape[0], self.n_out), dtype=np.float32) if out is None else out.reshape(-1, self.n_out)
        if self.weight is not None:
            matmul_t(x2, self.weight, out=y, backend=self.backend)
        else:
            assert self.packed is not None
            pool = self.scratch if self.scratch is not None else default_scratch()
            self.packed.matmul_t_into(x2, y, pool.get(self.packed.scratch_size()), self.backend)
        return y.reshape(shape)

    def rows(self, ids: np.ndarray[Any, np.dtype[np.integer[Any]]]) -> F32:
        """Rows of W (embedding lookup), dequantizing only those rows in packed mode."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            ids = ids.reshape(-1)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.n_out):
            raise InvalidRequestError(f"{self.info.name}: row ids must be in [0, {self.n_out})")
        if self.weight is not None:
            return np.asarray(self.weight[ids])
        assert self.packed is not None
        return self.packed.dequantize_rows(ids)

    @property
    def nbytes(self) -> int:
        """Memory this weight holds (the shared scratch buffer is not counted)."""
        if self.weight is not None:
            return int(self.weight.nbytes)
        assert self.packed is not None
        return self.packed.nbytes
