"""The operations an architecture's block calls, as one interface with two implementations.

A model holds one kernel set, chosen at load (`Model.load(numerics=...)`), and its block
calls every op through it: the projections (weights fused at load), norms, RoPE,
activations and attention with the KV cache. `fast` (kernels/fast.py) is plain float32,
`exact` (kernels/exact.py) replays ggml's CPU arithmetic. Nothing here is global, so two
models with different numerics run side by side in one process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from pyllama.batch import Batch
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear
from pyllama.ops import RopeTable
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, checked_backend

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
NumericsName = Literal["fast", "exact"]


class Projection(Protocol):
    """x (T, n_in) -> [x W1^T + b1 | x W2^T + b2 | ...] (T, n_out): weights fused at load."""

    n_out: int

    def __call__(self, x: F32) -> F32: ...


class Rope(Protocol):
    def apply(self, x: F32, positions: I64) -> object:
        """Rotate x (T, H, Dh) in place by each row's position."""
        ...


class AttentionPass(Protocol):
    """Attention for one forward pass: what the batch means for every layer, worked out once."""

    positions: I64

    def attend(self, layer: int, q: F32, k: F32, v: F32, scale: float, *, window: int = 0,
               softcap: float = 0.0) -> F32:
        """Store k/v in the cache and attend: q (T, H, Dh), k (T, Hkv, Dh), v (T, Hkv, Dv) -> (T, H*Dv)."""
        ...


class Kernels(ABC):
    """One numerics: how every op of a block is computed."""

    name: NumericsName
    # Weights.linear builds this Linear class (exact: GgmlLinear, which rounds like ggml).
    linear_class: type[Linear] = Linear

    def __init__(self, backend: MatmulBackend = DEFAULT_BACKEND) -> None:
        # The float32 matmul kernel of this model's weights and attention: BLAS, or einsum
        # where there is no BLAS (Pyodide); a value of this kernel set, not a global.
        self.backend = checked_backend(backend)

    @abstractmethod
    def project(self, parts: Sequence[Linear], biases: Sequence[F32 | None] | None = None) -> Projection: ...

    def fold(self, proj: Projection, in_scale: F32 | None = None, out_scale: F32 | None = None) -> bool:
        """Fold per-input (an RMSNorm weight before `proj`) and per-output (a scale after it)
        factors into `proj`'s weights, so the block skips those multiplies; True if done.
        Only plain float32 weights can: exact numerics round like ggml, which multiplies
        separately, and packed weights stay the file's blocks."""
        return False

    @abstractmethod
    def rms_norm(self, x: F32, weight: F32 | None, eps: float) -> F32:
        """A new array: x / sqrt(mean(x^2) + eps) * weight over the last axis."""

    @abstractmethod
    def silu(self, x: F32) -> F32: ...

    @abstractmethod
    def gelu(self, x: F32) -> F32: ...

    @abstractmethod
    def swiglu(self, gu: F32, n_ff: int) -> F32:
        """silu(gate) * up for gu = [gate | up] (T, 2*n_ff)."""

    @abstractmethod
    def geglu(self, gu: F32, n_ff: int) -> F32:
        """gelu(gate) * up for gu = [gate | up] (T, 2*n_ff)."""

    @abstractmethod
    def rope(self, table: RopeTable) -> Rope: ...

    @abstractmethod
    def attention(self, kv: KVCache, batch: Batch, causal: bool) -> AttentionPass: ...
