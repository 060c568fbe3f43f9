"""LoRA adapters applied at matmul time, as llama.cpp does (src/llama-adapter.cpp, llama-graph.cpp).

An adapter GGUF (`general.type` "adapter", `adapter.type` "lora") holds, for some weights W
(n_out, n_in) of its base model, a pair `<name>.lora_a` (rank, n_in) and `<name>.lora_b`
(n_out, rank). A projection then computes

    y = W x + scale * B (A x)        scale = user_scale * alpha / rank  (user_scale if alpha is 0)

(llama_adapter_lora_weight::get_scale). The base weights are never copied nor changed: the
model's projections are wrapped, and the wrapper adds each adapter's delta to the output
columns of the part it adapts. That is what makes the fused projections work: Q/K/V (and
gate/up) are fused at load into one matmul, and an adapter of `attn_k` adds its delta to K's
columns only. Dense and packed weights are wrapped alike, since the wrapper only sees the
projection's output. `token_embd.weight` pairs are stored flipped (A (n_vocab, rank),
B (n_embd, rank), llm_build_inp_embd): the embedding lookup adds rows of A times B^T, and a
head tied to the embeddings gets the transposed delta.

The scales a forward pass applies are `LoraSet.active`, one per adapter, set by the caller
before each pass (the scheduler batches only tasks with equal scales, as llama-server does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import GGUFFile, TensorInfo, read_gguf
from pyllama.linear import Linear
from pyllama.quant import SUPPORTED_TYPES, dequantize

if TYPE_CHECKING:
    from pyllama.kernels import Projection
    from pyllama.models import LlamaModel

F32 = np.ndarray[Any, np.dtype[np.float32]]
I64 = np.ndarray[Any, np.dtype[np.int64]]

__all__ = ["LoraAdapter", "LoraSet", "attach_adapters", "check_adapter_file"]


@dataclass
class LoraPair:
    """One adapted base tensor: A and B as float32, in the file's (numpy) shapes."""

    a: F32
    b: F32

    @property
    def rank(self) -> int:
        return int(self.b.shape[-1])  # ggml's b->ne[0]


@dataclass
class LoraAdapter:
    """An adapter file's metadata and its A/B pairs, keyed by the base tensor's name."""

    path: str
    arch: str
    alpha: float
    task_name: str = ""
    prompt_prefix: str = ""
    pairs: dict[str, LoraPair] = field(default_factory=dict)
    # an activated LoRA (aLoRA, pyllama/alora.py): the tokens after whose last occurrence it applies
    alora_invocation_tokens: tuple[int, ...] = ()
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def factor(self, name: str) -> float:
        """alpha / rank of one pair (1 when the adapter has no alpha)."""
        rank = self.shapes[name][1][-1]
        return self.alpha / rank if self.alpha else 1.0

    @classmethod
    def read(cls, path: str | Path, *, load: bool = True) -> LoraAdapter:
        """Read and check an adapter file; `load=False` reads only its header (start-up checks)."""
        try:
            gguf = read_gguf(path)
        except ModelLoadError as exc:
            raise ModelLoadError(f"failed to load LoRA adapter {path}: {exc}") from None
        except OSError as exc:
            raise ModelLoadError(f"failed to load LoRA adapter {path}: {exc.strerror or exc}") from None
        return cls._from_gguf(gguf, str(path), load)

    @classmethod
    def _from_gguf(cls, gguf: GGUFFile, path: str, load: bool) -> LoraAdapter:
        def fail(why: str) -> ModelLoadError:
            return ModelLoadError(f"LoRA adapter {path}: {why}")

        md = gguf.metadata
        if md.get("general.type") != "adapter":
            raise fail(f"expect general.type to be 'adapter', but got: {md.get('general.type', '')}")
        if md.get("adapter.type") != "lora":
            raise fail(f"expect adapter.type to be 'lora', but got: {md.get('adapter.type', '')}")
        arch = md.get("general.architecture")
        alpha = md.get("adapter.lora.alpha", 0.0)
        if not isinstance(arch, str) or not isinstance(alpha, int | float) or isinstance(alpha, bool):
            raise fail("general.architecture must be a string and adapter.lora.alpha a number")
        ad = cls(path, arch, float(alpha), str(md.get("adapter.lora.task_name", "")),
                 str(md.get("adapter.lora.prompt_prefix", "")))
        ad.alora_invocation_tokens = _invocation_tokens(gguf, fail)
        halves: dict[str, dict[str, TensorInfo]] = {}
        for name, info in gguf.tensors.items():
            if name.endswith((".lora_a", ".lora_b")):
                halves.setdefault(name[:-7], {})[name[-1]] = info
            elif not name.endswith("_norm.weight"):  # llama.cpp skips norm vectors too
                raise fail(f"LoRA tensor '{name}' has unexpected suffix")
        for base, ab in halves.items():
            if "a" not in ab or "b" not in ab:
                raise fail(f"LoRA tensor pair for '{base}' is missing one component")
            a, b = ab["a"], ab["b"]
            for t in (a, b):
                if t.ggml_type not in SUPPORTED_TYPES:
                    raise fail(f"tensor {t.name} has type {t.ggml_type.name}, which pyllama cannot read")
            if len(a.shape) != len(b.shape) or len(a.shape) not in (2, 3):
                raise fail(f"tensors of '{base}' must both be 2-D (or 3-D for experts)")
            if not base.endswith("token_embd.weight") and a.shape[-2] != b.shape[-1]:
                raise fail("lora_a tensor is not transposed (hint: adapter from \"finetune\" example is no longer "
                           f"supported): '{base}'")
            ad.shapes[base] = (a.shape, b.shape)
            if load:
                ad.pairs[base] = LoraPair(_f32(a), _f32(b))
        return ad

    def check_base(self, arch: str, tensors: dict[str, tuple[int, ...]]) -> None:
        """llama.cpp's checks against the base model: same architecture, every tensor present
        with matching shapes (raises ModelLoadError with llama.cpp's hints)."""
        if arch != self.arch:
            raise ModelLoadError(f"LoRA adapter {self.path}: model arch and LoRA arch mismatch "
                                 f"({arch} vs {self.arch})")
        for name, (a, b) in self.shapes.items():
            if name not in tensors:
                raise ModelLoadError(f"LoRA adapter {self.path}: LoRA tensor '{name}' does not exist in base model "
                                     "(hint: maybe wrong base model?)")
            w = tensors[name]
            if name.endswith("token_embd.weight"):
                ok = len(a) == 2 and w == (a[0], b[0])
            else:
                ok = len(w) == len(a) and w[-1] == a[-1] and w[-2] == b[-2] and w[:-2] == a[:-2] == b[:-2]
            if not ok:
                raise ModelLoadError(f"LoRA adapter {self.path}: tensor '{name}' has incorrect shape "
                                     "(hint: maybe wrong base model?)")


def _invocation_tokens(gguf: GGUFFile, fail: Any) -> tuple[int, ...]:
    """`adapter.alora.invocation_tokens`: an array of uint32 or nothing (llama-adapter.cpp)."""
    key = "adapter.alora.invocation_tokens"
    if key not in gguf.metadata:
        return ()
    value = gguf.metadata[key]
    if not isinstance(value, np.ndarray | list):
        raise fail(f"invalid gguf type for {key}")
    if not isinstance(value, np.ndarray) or value.dtype != np.uint32:
        raise fail(f"invalid gguf element type for {key}")
    return tuple(int(t) for t in value)


def _f32(info: TensorInfo) -> F32:
    out: F32 = np.ascontiguousarray(dequantize(info.data, info.ggml_type, info.shape), dtype=np.float32)
    return out


def check_adapter_file(path: str | Path, model_path: str | Path) -> LoraAdapter:
    """Start-up check (headers only): the adapter is a LoRA for this model. Raises ModelLoadError."""
    ad = LoraAdapter.read(path, load=False)
    try:
        base = read_gguf(model_path)
    except (ModelLoadError, OSError):
        return ad  # the model's own load reports a broken model file
    ad.check_base(base.architecture, {n: t.shape for n, t in base.tensors.items()})
    return ad


class Adaptable(Protocol):
    """What attach_adapters needs of a model (pyllama.engine.Model, which imports this module)."""

    gguf: GGUFFile
    net: LlamaModel
    lora: LoraSet | None


class LoraSet:
    """The adapters of one model and their scales: `scales` the server-wide ones (--lora-scaled,
    POST /lora-adapters), `active` what the next forward pass applies."""

    def __init__(self, adapters: Sequence[LoraAdapter], scales: Sequence[float]) -> None:
        self.adapters = list(adapters)
        self.scales: tuple[float, ...] = tuple(float(s) for s in scales)
        self.active: tuple[float, ...] = self.scales

    def info(self, piece: Callable[[int], bytes] | None = None) -> list[dict[str, Any]]:
        """GET /lora-adapters (server_task_result_get_lora::to_json); an aLoRA also lists its
        invocation tokens, and their text when `piece` renders a token."""
        out: list[dict[str, Any]] = []
        for i, (a, s) in enumerate(zip(self.adapters, self.scales, strict=True)):
            entry: dict[str, Any] = {"id": i, "path": a.path, "scale": s, "task_name": a.task_name,
                                     "prompt_prefix": a.prompt_prefix}
            if a.alora_invocation_tokens:
                if piece is not None:
                    text = b"".join(piece(t) for t in a.alora_invocation_tokens)
                    entry["alora_invocation_string"] = text.decode("utf-8", errors="replace")
                entry["alora_invocation_tokens"] = list(a.alora_invocation_tokens)
            out.append(entry)
        return out


@dataclass
class _Delta:
    """One adapter's contribution to a projection: y += user_scale * (x @ a_t) @ b.

    The pairs of the fused parts are stacked: a_t (n_in, R) holds every adapted part's A^T
    side by side, b (R, n_out) each part's B^T times alpha/rank in that part's columns and
    zeros elsewhere, so Q, K and V (or gate and up) cost two small matmuls, not six."""

    adapter: int
    a_t: F32
    b: F32


def _stack(adapter: int, pieces: list[tuple[int, int, F32, F32, float]], n_out: int) -> _Delta:
    """`pieces`: (start, stop, A^T (n_in, r), B^T (r, stop - start), alpha/rank) per adapted part."""
    a_t = np.ascontiguousarray(np.concatenate([p[2] for p in pieces], axis=1), dtype=np.float32)
    b = np.zeros((a_t.shape[1], n_out), dtype=np.float32)
    row = 0
    for start, stop, _, bt, factor in pieces:
        b[row : row + bt.shape[0], start:stop] = bt * np.float32(factor)
        row += bt.shape[0]
    return _Delta(adapter, a_t, b)


class LoraProjection:
    """A projection plus its adapters' deltas: y = base(x) + sum_i s_i * (x A_i^T) B_i^T."""

    def __init__(self, base: Projection, deltas: list[_Delta], lora: LoraSet) -> None:
        self.base = base
        self.n_out = base.n_out
        self.deltas = deltas
        self.lora = lora

    def __call__(self, x: F32) -> F32:
        return _add_deltas(self.base(x), x, self.deltas, self.lora.active)


def _add_deltas(y: F32, x: F32, deltas: list[_Delta], active: tuple[float, ...]) -> F32:
    for d in deltas:
        s = active[d.adapter]
        if s != 0.0:
            delta = (x @ d.a_t) @ d.b
            if s != 1.0:
                delta *= np.float32(s)
            y += delta
    return y


class LoraExpert(Linear):
    """One expert's (or the router's) Linear with its adapters' deltas.

    A subclass sharing the base's arrays (its __dict__), so MixtureOfExperts keeps calling
    a Linear; the base's own __call__ (plain or ggml-exact) does the matmul."""

    def __init__(self, base: Linear, deltas: list[_Delta], lora: LoraSet) -> None:  # no Linear.__init__: no load
        self.__dict__.update(base.__dict__)
        self._base = base
        self._deltas = deltas
        self._lora = lora

    def __call__(self, x: F32, out: F32 | None = None) -> F32:
        return _add_deltas(self._base(x, out), x, self._deltas, self._lora.active)


class LoraEmbedding(Linear):
    """The token embedding lookup plus each adapter's rows of A times B^T (llm_build_inp_embd)."""

    def __init__(self, base: Linear, pairs: list[tuple[int, LoraPair, float]], lora: LoraSet) -> None:
        self.__dict__.update(base.__dict__)
        self._base = base
        self._pairs = pairs
        self._lora = lora

    def rows(self, ids: np.ndarray[Any, np.dtype[np.integer[Any]]]) -> F32:
        x = self._base.rows(ids)
        active = self._lora.active
        for i, pair, factor in self._pairs:
            if active[i] != 0.0:
                x = x + np.float32(active[i] * factor) * (pair.a[np.asarray(ids).reshape(-1)] @ pair.b.T)
        return x


def attach_adapters(model: Adaptable, adapters: Sequence[LoraAdapter], scales: Sequence[float]) -> LoraSet:
    """Wrap `model`'s projections with the adapters' deltas; the model keeps its weights.
    The adapters' pairs move into the wrappers (an adapter attaches to one model).

    Every adapter tensor must land on a projection pyllama computes (else ModelLoadError:
    silently skipping part of an adapter would give another model than its author's)."""
    if len(scales) != len(adapters):
        raise ValueError("one scale per adapter")
    gguf = model.gguf
    for ad in adapters:
        ad.check_base(gguf.architecture, {n: t.shape for n, t in gguf.tensors.items()})
    lora = LoraSet(adapters, scales)
    used: set[tuple[int, str]] = set()

    def deltas_for(parts: Sequence[Linear]) -> list[_Delta]:
        out: list[_Delta] = []
        for i, ad in enumerate(adapters):
            pieces: list[tuple[int, int, F32, F32, float]] = []
            start = 0
            for p in parts:
                name = p.info.name
                pair = ad.pairs.get(name)
                if pair is not None and pair.a.ndim == 2:
                    used.add((i, name))
                    a_t, b_t = (pair.b, pair.a.T) if name.endswith("token_embd.weight") else (pair.a.T, pair.b.T)
                    pieces.append((start, start + p.n_out, a_t, b_t, ad.factor(name)))
                start += p.n_out
            if pieces:
                out.append(_stack(i, pieces, start))
        return out

    def wrap(proj: Any) -> Any:
        parts = getattr(proj, "parts", None)
        if proj is None or parts is None:
            return proj
        deltas = deltas_for(parts)
        # Factors the kernel set folded into the base weights (an RMSNorm weight before the
        # projection, the attention scale after it) apply to the deltas too.
        in_scale, out_scale = getattr(proj, "in_scale", None), getattr(proj, "out_scale", None)
        for d in deltas:
            if in_scale is not None:
                d.a_t = np.ascontiguousarray(d.a_t * in_scale[:, None], dtype=np.float32)
            if out_scale is not None:
                d.b = np.ascontiguousarray(d.b * out_scale[None, :], dtype=np.float32)
        return LoraProjection(proj, deltas, lora) if deltas else proj

    net = model.net
    for layer in net.layers:
        for attr in ("qkv", "wo", "gate_up", "down"):
            setattr(layer, attr, wrap(getattr(layer, attr)))
        if layer.moe is not None:
            _wrap_experts(layer.moe, adapters, lora, used)
    if getattr(net, "has_head", False):
        net.head_proj = wrap(net.head_proj)
    embd: list[tuple[int, LoraPair, float]] = []
    for i, ad in enumerate(adapters):
        pair = ad.pairs.get("token_embd.weight")
        if pair is not None:
            used.add((i, "token_embd.weight"))
            embd.append((i, pair, ad.factor("token_embd.weight")))
    if embd:
        net.tok_embd = LoraEmbedding(net.tok_embd, embd, lora)
    for i, ad in enumerate(adapters):
        left = sorted(n for n in ad.pairs if (i, n) not in used)
        if left:
            raise ModelLoadError(f"LoRA adapter {ad.path}: pyllama does not apply adapters to {', '.join(left[:3])}"
                                 f"{' ...' if len(left) > 3 else ''} of a {gguf.architecture} model")
    for ad in adapters:  # the stacked copies hold the values now (the embedding lookup keeps its pair)
        ad.pairs = {n: p for n, p in ad.pairs.items() if n == "token_embd.weight"}
        net.w.nbytes += sum(p.a.nbytes + p.b.nbytes for p in ad.pairs.values())
    net.w.nbytes += sum(d.a_t.nbytes + d.b.nbytes for d in _all_deltas(net))  # /props, bench
    model.lora = lora
    return lora


def _all_deltas(net: Any) -> list[_Delta]:
    out: list[_Delta] = []
    for layer in net.layers:
        for proj in (layer.qkv, layer.wo, layer.gate_up, layer.down):
            out += proj.deltas if isinstance(proj, LoraProjection) else []
        if layer.moe is not None:
            for lin in [layer.moe.router, *layer.moe.up, *(layer.moe.gate or []), *layer.moe.down]:
                out += lin._deltas if isinstance(lin, LoraExpert) else []
    head = getattr(net, "head_proj", None)
    return out + (head.deltas if isinstance(head, LoraProjection) else [])


def _wrap_experts(moe: Any, adapters: Sequence[LoraAdapter], lora: LoraSet, used: set[tuple[int, str]]) -> None:
    """3-D expert pairs (n_expert, rank, n_in) / (n_expert, n_out, rank): each expert its slice;
    the router (`ffn_gate_inp`, build_lora_mm in llama.cpp) an ordinary 2-D pair."""
    router = moe.router
    deltas = []
    for i, ad in enumerate(adapters):
        pair = ad.pairs.get(router.info.name)
        if pair is not None and pair.a.ndim == 2:
            used.add((i, router.info.name))
            deltas.append(_stack(i, [(0, router.n_out, pair.a.T, pair.b.T, ad.factor(router.info.name))], router.n_out))
    if deltas:
        moe.router = LoraExpert(router, deltas, lora)
    for attr in ("up", "gate", "down"):
        experts: list[Linear] | None = getattr(moe, attr)
        if not experts:
            continue
        name = experts[0].info.name.rsplit("[", 1)[0]
        wrapped: list[Linear] = []
        for e, lin in enumerate(experts):
            deltas = []
            for i, ad in enumerate(adapters):
                pair = ad.pairs.get(name)
                if pair is not None and pair.a.ndim == 3:
                    used.add((i, name))
                    deltas.append(_stack(i, [(0, lin.n_out, pair.a[e].T, pair.b[e].T, ad.factor(name))], lin.n_out))
            wrapped.append(LoraExpert(lin, deltas, lora) if deltas else lin)
        setattr(moe, attr, wrapped)
