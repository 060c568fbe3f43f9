"""The engine's front door: load a GGUF model, decode batches, generate and embed.

`Model.load()` is what the CLI, the server's scheduler and the browser worker call. It
reads the file (memory-mapped, or from a buffer under Pyodide), builds the typed config,
picks the weight layout, allocates the KV cache and the architecture's network.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from pyllama.config import ModelConfig, finalize_rope, read_config
from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.gguf_file import GGUFFile, parse_gguf, read_gguf
from pyllama.kernels import kernels_for
from pyllama.kv_cache import KVCache
from pyllama.kv_override import KVOverride, apply_kv_overrides
from pyllama.models import ARCHITECTURES, Batch, LlamaModel, SeqChunk
from pyllama.models.base import Weights
from pyllama.ops import as_f32
from pyllama.quant import DEFAULT_PACKING, PackLayout, checked_layout
from pyllama.quant.matmul import DEFAULT_BACKEND, MatmulBackend, checked_backend

if TYPE_CHECKING:
    from pyllama.lora import LoraSet
    from pyllama.tokenizer import Tokenizer

F32 = np.ndarray[Any, np.dtype[np.float32]]
WeightsChoice = Literal["auto", "dense", "packed"]
NumericsChoice = Literal["fast", "exact"]

IS_PYODIDE = sys.platform == "emscripten"
DEFAULT_MEM_BUDGET = 4 << 30
# Under Pyodide, dense float32 decodes about twice as fast as packed (no BLAS, so converting
# packed tiles dominates; docs/performance.md), but the wasm heap is small (4 GiB at most,
# and it also holds the file's bytes), so `auto` picks dense there only when the float32
# weights fit this budget: SmolLM2-135M (513 MiB) goes dense, Gemma 3 270M (1023 MiB)
# stays packed.
PYODIDE_DENSE_BUDGET = 768 << 20


class TokenSampler(Protocol):
    """What the generate loop needs from a sampler (pyllama.sampling.Sampler provides it)."""

    def sample(self, logits: F32) -> int: ...

    def accept(self, token: int) -> None: ...


@dataclass
class RopeOverrides:
    """llama.cpp's --rope-scaling/--rope-scale/--rope-freq-base/--rope-freq-scale/--yarn-* flags."""

    scaling_type: str | None = None
    freq_base: float | None = None
    freq_scale: float | None = None
    yarn_orig_ctx: int | None = None
    yarn_ext_factor: float | None = None
    yarn_attn_factor: float | None = None
    yarn_beta_fast: float | None = None
    yarn_beta_slow: float | None = None

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> RopeOverrides | None:
        """From flag values keyed by their long names without dashes (argparse's `vars(args)`,
        the server's model spec); None when no RoPE flag is set. `rope_scale` N means a
        freq_scale of 1/N, as in llama.cpp's common/arg.cpp."""
        scale = flags.get("rope_scale")
        o = cls(
            scaling_type=flags.get("rope_scaling"),
            freq_base=flags.get("rope_freq_base"),
            freq_scale=flags.get("rope_freq_scale") or (1.0 / scale if scale else None),
            **{f: flags.get(f) for f in ("yarn_orig_ctx", "yarn_ext_factor", "yarn_attn_factor",
                                         "yarn_beta_fast", "yarn_beta_slow")},
        )
        return None if o == cls() else o


def dense_bytes(gguf: GGUFFile) -> int:
    """Memory the dense layout needs: every weight as float32."""
    return sum(4 * t.n_elements for t in gguf.tensors.values())


def choose_weights(gguf: GGUFFile, choice: WeightsChoice, mem_budget: int | None) -> Literal["dense", "packed"]:
    if choice == "dense":
        need = dense_bytes(gguf)
        if mem_budget is not None and need > mem_budget:
            raise ModelLoadError(
                f"{gguf.path}: dense weights need {need / 2**20:.0f} MiB, over the memory budget of "
                f"{mem_budget / 2**20:.0f} MiB (use --weights packed or raise --mem-budget)"
            )
        return "dense"
    if choice == "packed":
        return "packed"
    if choice != "auto":
        raise InvalidRequestError(f"--weights must be auto, dense or packed, not {choice!r}")
    default = PYODIDE_DENSE_BUDGET if IS_PYODIDE else DEFAULT_MEM_BUDGET
    budget = default if mem_budget is None else mem_budget
    return "dense" if dense_bytes(gguf) <= budget else "packed"


class Model:
    """A loaded model with its KV cache: `decode(batch)` -> logits."""

    def __init__(
        self,
        gguf: GGUFFile,
        config: ModelConfig,
        net: LlamaModel,
        weights: Literal["dense", "packed"],
        n_ctx: int,
        n_seq: int,
        n_ubatch: int,
        load_seconds: float,
        numerics: NumericsChoice = "fast",
    ) -> None:
        self.gguf = gguf
        self.numerics = numerics
        self.path = gguf.path
        self.config = config
        self.net = net
        self.weights = weights
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.n_ubatch = n_ubatch
        self.load_seconds = load_seconds
        self.lora: LoraSet | None = None  # LoRA adapters (pyllama.lora.attach_adapters)

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Model:
        return cls.from_gguf(read_gguf(path), **kwargs)

    @classmethod
    def from_buffer(cls, buffer: Any, name: str = "<buffer>", **kwargs: Any) -> Model:
        """Load from bytes already in memory (a browser File/ArrayBuffer): no extra copy."""
        return cls.from_gguf(parse_gguf(buffer, name), **kwargs)

    @classmethod
    def from_gguf(
        cls,
        gguf: GGUFFile,
        *,
        weights: WeightsChoice = "auto",
        n_ctx: int = 4096,
        n_seq: int = 1,
        n_ubatch: int = 512,
        kv_unified: bool = False,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        rope: RopeOverrides | None = None,
        mem_budget: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        numerics: NumericsChoice = "fast",
        packing: PackLayout = DEFAULT_PACKING,
        backend: MatmulBackend = DEFAULT_BACKEND,
        kv_overrides: Sequence[KVOverride] = (),
    ) -> Model:
        """`numerics="exact"` replays ggml's CPU arithmetic bit for bit (greedy output equals
        llama.cpp's token for token; docs/performance.md has its cost); "fast" is plain
        float32 (docs/numerics.md). The model holds its kernel set (pyllama/kernels), so
        models with different numerics run side by side in one process. `packing`: how
        packed weights hold block types (pyllama.quant.PackLayout); `backend`: the float32
        matmul kernel (BLAS, or einsum where there is none). Both are this model's own.
        `kv_overrides` (--override-kv) replace metadata values before anything reads them."""
        t0 = time.perf_counter()
        if kv_overrides:
            apply_kv_overrides(gguf, list(kv_overrides))
        try:
            kernels = kernels_for(numerics, checked_backend(backend))
            packing = checked_layout(packing)
        except ValueError as e:
            raise InvalidRequestError(str(e)) from None
        arch = gguf.architecture
        if arch not in ARCHITECTURES:
            raise ModelLoadError(
                f"{gguf.path}: architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})"
            )
        config = read_config(gguf)
        if rope is not None:
            apply_rope_overrides(config, rope)
        if n_ctx <= 0:
            n_ctx = config.n_ctx_train
        if n_seq <= 0:
            raise InvalidRequestError(f"number of sequences must be positive, got {n_seq}")
        if n_ubatch <= 0:
            raise InvalidRequestError(f"ubatch size must be positive, got {n_ubatch}")
        # llama-server splits the context between slots unless the cache is unified.
        n_ctx_seq = n_ctx if kv_unified else max(1, n_ctx // n_seq)
        mode = choose_weights(gguf, weights, mem_budget)
        kv = KVCache(
            config.n_layer, n_seq, n_ctx_seq, config.n_head_kv, config.head_dim, config.head_dim_v,
            cache_type_k, cache_type_v, widen_f16=numerics == "fast",
        )
        w = Weights(gguf, mode, kernels, packing)
        if progress is not None:
            w.progress = progress
        net = ARCHITECTURES[arch](gguf, config, w, kv)
        return cls(gguf, config, net, mode, n_ctx, n_seq, n_ubatch, time.perf_counter() - t0, numerics)

    # -- properties the server and CLI show ----------------------------------------------
    @cached_property
    def tokenizer(self) -> Tokenizer:
        from pyllama.tokenizer import Tokenizer

        return Tokenizer.from_gguf(self.gguf)

    @property
    def kv(self) -> KVCache:
        return self.net.kv

    @property
    def n_ctx_seq(self) -> int:
        return self.net.kv.n_ctx_seq

    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    @property
    def metadata(self) -> dict[str, Any]:
        return self.gguf.metadata

    @property
    def chat_template(self) -> str | None:
        tpl = self.gguf.metadata.get("tokenizer.chat_template")
        return tpl if isinstance(tpl, str) else None

    @property
    def weights_nbytes(self) -> int:
        return self.net.w.nbytes

    # -- compute ---------------------------------------------------------------------
    def decode(self, batch: Batch) -> F32:
        """Logits for the rows the batch asks for, splitting it into ubatches of n_ubatch tokens."""
        if batch.n_tokens <= self.n_ubatch:
            return self.net.decode(batch)
        outputs: list[F32] = []
        for sub in split_batch(batch, self.n_ubatch):
            outputs.append(self.net.decode(sub))
        return as_f32(np.concatenate(outputs, axis=0))

    def hidden(self, batch: Batch) -> F32:
        """Final-normed hidden states of the rows asked for (embeddings)."""
        outs = [self.net.hidden(sub) for sub in split_batch(batch, self.n_ubatch)]
        return as_f32(np.concatenate(outs, axis=0))

    def eval_prompt(self, tokens: Sequence[int], seq: int = 0, pos: int | None = None) -> F32:
        """Append tokens to sequence `seq`; return the logits of the last one."""
        start = self.kv.length(seq) if pos is None else pos
        return as_f32(self.decode(Batch([SeqChunk(seq, list(tokens), start, "last")]))[-1])

    def generate(
        self,
        prompt: Sequence[int],
        sampler: TokenSampler,
        n_predict: int = -1,
        *,
        seq: int = 0,
        ignore_eos: bool = False,
        eog_ids: frozenset[int] | None = None,
    ) -> Iterator[int]:
        """The single-sequence generate loop: prompt once, then one token per step."""
        if not prompt:
            raise InvalidRequestError("the prompt is empty")
        self.kv.clear(seq)
        eog = self.tokenizer.eog_ids if eog_ids is None else eog_ids
        logits = self.eval_prompt(prompt, seq)
        produced = 0
        while n_predict < 0 or produced < n_predict:
            token = sampler.sample(logits)
            sampler.accept(token)
            if token in eog and not ignore_eos:
                return
            yield token
            produced += 1
            if self.kv.length(seq) >= self.n_ctx_seq:
                return
            if n_predict >= 0 and produced >= n_predict:
                return
            logits = self.eval_prompt([token], seq)


def split_batch(batch: Batch, n_ubatch: int) -> Iterator[Batch]:
    """Cut a batch into pieces of at most n_ubatch tokens, keeping each chunk's output rule."""
    current = Batch()
    room = n_ubatch
    for c in batch.chunks:
        i = 0
        while i < len(c.tokens):
            take = min(room, len(c.tokens) - i)
            last_piece = i + take == len(c.tokens)
            out = c.output if c.output == "all" else (c.output if last_piece else "none")
            current.chunks.append(SeqChunk(c.seq, c.tokens[i : i + take], c.pos + i, out))
            i += take
            room -= take
            if room == 0:
                yield current
                current, room = Batch(), n_ubatch
    if current.chunks:
        yield current


def apply_rope_overrides(config: ModelConfig, o: RopeOverrides) -> None:
    """Apply llama.cpp's rope flags on top of the GGUF values (llama_context constructor rules)."""
    if o.scaling_type is not None and o.scaling_type not in ("none", "linear", "yarn"):
        raise InvalidRequestError(f"--rope-scaling must be none, linear or yarn, not {o.scaling_type!r}")
    finalize_rope(config.rope, **dataclasses.asdict(o))
