"""What every architecture shares: the batch, weight access, and the decoder-only skeleton.

A model file (llama.py, gemma3.py, ...) only says how one block is wired; this module owns
the loop over the batch's sequences, the KV cache bookkeeping and the output head, so the
architectures stay short and comparable (the mlx-lm layout, see STYLE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pyllama import numerics
from pyllama.config import ModelConfig
from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.exact_matmul import GgmlLinear
from pyllama.gguf_file import GGUFFile
from pyllama.kv_cache import KVCache
from pyllama.linear import Linear, WeightMode
from pyllama.ops import RopeTable
from pyllama.quant import SUPPORTED_TYPES, dequantize
from pyllama.quant.grouped import _GroupedCodes as GroupedCodes
from pyllama.quant.pages import release_file_pages as release_file_pages  # re-exported (fastpath)

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]

OutputRows = Literal["none", "last", "all"]


@dataclass
class SeqChunk:
    """Consecutive tokens of one sequence, starting at position `pos`."""

    seq: int
    tokens: list[int]
    pos: int
    output: OutputRows = "last"


@dataclass
class Batch:
    """One forward pass: chunks from any number of sequences (continuous batching)."""

    chunks: list[SeqChunk] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(c.tokens) for c in self.chunks)

    def output_rows(self) -> I64:
        """Row indices (into the concatenated tokens) whose hidden state is wanted."""
        rows: list[int] = []
        start = 0
        for c in self.chunks:
            n = len(c.tokens)
            if c.output == "all":
                rows.extend(range(start, start + n))
            elif c.output == "last" and n:
                rows.append(start + n - 1)
            start += n
        return np.asarray(rows, dtype=np.int64)


class Weights:
    """Named access to a GGUF's tensors in compute layout, with errors naming file and tensor."""

    def __init__(self, gguf: GGUFFile, mode: WeightMode) -> None:
        self.gguf = gguf
        self.mode = mode
        # Bytes held by the compute layouts built so far, and a load-progress hook
        # called as (bytes of file processed, total bytes).
        self.nbytes = 0
        self.progress: Callable[[int, int], None] | None = None
        self._done = 0
        self._total = sum(t.n_bytes for t in gguf.tensors.values())
        for info in gguf.tensors.values():
            if info.ggml_type not in SUPPORTED_TYPES:
                supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
                raise ModelLoadError(
                    f"{gguf.path}: tensor {info.name} has type {info.ggml_type.name}, which pyllama "
                    f"cannot read yet (supported: {supported})"
                )

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def linear(self, name: str, *, mode: WeightMode | None = None) -> Linear:
        if name not in self.gguf.tensors:
            raise ModelLoadError(f"{self.gguf.path}: required tensor {name} is missing")
        info = self.gguf.tensors[name]
        # GgmlLinear rounds like llama.cpp's CPU matmul (see pyllama/numerics.py).
        lin = GgmlLinear(info, mode or self.mode)
        self._account(info.n_bytes, lin.nbytes + lin.exact_nbytes)  # + the exact kernel's own codes
        if holds_copy(lin):
            release_file_pages(info.data)
        return lin

    def _account(self, file_bytes: int, held: int) -> None:
        self.nbytes += held
        self._done += file_bytes
        if self.progress is not None:
            self.progress(self._done, self._total)

    def optional_linear(self, name: str) -> Linear | None:
        return self.linear(name) if self.has(name) else None

    def vector(self, name: str) -> F32:
        """A small tensor (norm weight, bias) as float32, always dense."""
        if name not in self.gguf.tensors:
            raise ModelLoadError(f"{self.gguf.path}: required tensor {name} is missing")
        info = self.gguf.tensors[name]
        out = dequantize(info.data, info.ggml_type, info.shape)
        self._account(info.n_bytes, out.nbytes)
        return out

    def optional_vector(self, name: str) -> F32 | None:
        return self.vector(name) if self.has(name) else None


def holds_copy(lin: Linear) -> bool:
    """Whether `lin` computes from its own arrays (dequantized or repacked), not the file's bytes."""
    if lin.packed is not None:
        return isinstance(lin.packed, GroupedCodes)
    return lin.weight is not None and not np.may_share_memory(lin.weight, lin.info.data)


class DecoderModel:
    """Base class: subclasses build their blocks in __init__ and implement `block()`."""

    config: ModelConfig
    rope: RopeTable
    kv: KVCache
    tok_embd: Linear
    output: Linear
    output_norm: F32 | None
    causal: bool = True
    # The output head as a fast-path FusedLinear (set by architectures with a fast path;
    # used while exact numerics are off).
    fast_output: Callable[[F32], F32] | None = None

    def __init__(self, gguf: GGUFFile, config: ModelConfig, weights: Weights, kv: KVCache) -> None:
        self.gguf = gguf
        self.config = config
        self.w = weights
        self.kv = kv

    # -- pieces subclasses provide ------------------------------------------------------
    def embed(self, tokens: I64) -> F32:
        return self.tok_embd.rows(tokens)

    def begin_forward(self, batch: Batch) -> None:
        """Hook run once per forward pass before the blocks (fast paths plan attention here)."""

    def block(self, layer: int, x: F32, batch: Batch, positions: I64) -> F32:
        raise NotImplementedError

    def final_norm(self, x: F32) -> F32:
        raise NotImplementedError

    def head(self, h: F32) -> F32:
        return self.output_logits(h)

    def output_logits(self, h: F32) -> F32:
        """h @ output^T: the fast path's fused layout unless exact numerics are on."""
        if self.fast_output is not None and not numerics.EXACT:
            return self.fast_output(h)
        return self.output(h)

    # -- the shared forward pass --------------------------------------------------------
    def check_batch(self, batch: Batch) -> None:
        seen: set[int] = set()
        for c in batch.chunks:
            if c.seq in seen:
                raise InvalidRequestError(f"sequence {c.seq} appears twice in one batch")
            seen.add(c.seq)
            for t in c.tokens:
                if not 0 <= t < self.config.n_vocab:
                    raise InvalidRequestError(f"token id {t} out of range (vocabulary has {self.config.n_vocab})")
            self.kv.reserve(c.seq, c.pos, len(c.tokens))

    def hidden(self, batch: Batch) -> F32:
        """Run every block over the batch; returns the final-normed hidden rows asked for."""
        self.check_batch(batch)
        tokens = np.fromiter((t for c in batch.chunks for t in c.tokens), dtype=np.int64)
        positions = np.fromiter(
            (c.pos + i for c in batch.chunks for i in range(len(c.tokens))), dtype=np.int64
        )
        x = self.embed(tokens)
        self.begin_forward(batch)
        for layer in range(self.config.n_layer):
            x = self.block(layer, x, batch, positions)
        for c in batch.chunks:
            self.kv.commit(c.seq, c.pos + len(c.tokens))
        rows = batch.output_rows()
        return self.final_norm(x[rows])

    def decode(self, batch: Batch) -> F32:
        """Logits (n_outputs, n_vocab) for the rows the batch asks for."""
        h = self.hidden(batch)
        if h.shape[0] == 0:
            return np.zeros((0, self.config.n_vocab), dtype=np.float32)
        return self.head(h)

    def rerotate_keys(self, layer: int, keys: F32, delta: int) -> F32:
        """Rotate cached keys (Hkv, n, Dh) by `delta` positions (context shift)."""
        n = keys.shape[1]
        x = keys.transpose(1, 0, 2).copy()  # (n, Hkv, Dh)
        # RoPE is additive in the angle: rotating by p then by delta equals rotating by p+delta;
        # negative deltas use the table's symmetry cos(-a)=cos(a), sin(-a)=-sin(a).
        table = self.rope_for_layer(layer)
        pos = np.full(n, abs(delta), dtype=np.int64)
        if delta < 0:
            saved = table.sin
            table.sin = -saved
            try:
                table.apply(x, pos)
            finally:
                table.sin = saved
        else:
            table.apply(x, pos)
        return x.transpose(1, 0, 2)

    def rope_for_layer(self, layer: int) -> RopeTable:
        return self.rope
