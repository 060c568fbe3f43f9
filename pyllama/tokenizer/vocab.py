"""The vocabulary as llama.cpp's `llama_vocab::impl::load` builds it from GGUF metadata.

Everything that decides how text becomes ids lives here: the tokenizer family, the
pre-tokenizer type and its flags (add BOS/EOS, clean spaces, ignore merges, ...), the
special ids (including llama.cpp's guesses by token text for EOT/FIM and the
end-of-generation set) and the per-token attributes. The rules are copied from
llama-vocab.cpp in the same order, because later rules overwrite earlier ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import GGUFFile
from pyllama.tokenizer.pre_types import PRE_TYPES

log = logging.getLogger(__name__)

# llama_token_attr bits (llama.h)
ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_NORMALIZED = 1 << 6
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8
ATTR_SINGLE_WORD = 1 << 9

# GGUF token_type -> attribute (UNDEFINED=0, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)
_TYPE_TO_ATTR = np.array(
    [ATTR_UNDEFINED, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_UNUSED, ATTR_BYTE],
    dtype=np.int64,
)

K = "tokenizer.ggml."


# Auto-detection by token text (llama-vocab.cpp), used when the GGUF has no explicit id.
_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_PRE_TEXTS = ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>")  # fmt: skip
_FIM_SUF_TEXTS = ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>")  # fmt: skip
_FIM_MID_TEXTS = ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>")  # fmt: skip
_FIM_PAD_TEXTS = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
_FIM_REP_TEXTS = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
_FIM_SEP_TEXTS = ("<|file_sep|>",)
_EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
)  # fmt: skip

_SPECIAL_KEYS = (
    ("bos_token_id", "bos"),
    ("eos_token_id", "eos"),
    ("eot_token_id", "eot"),
    ("eom_token_id", "eom"),
    ("unknown_token_id", "unk"),
    ("seperator_token_id", "sep"),
    ("padding_token_id", "pad"),
    ("mask_token_id", "mask"),
    ("fim_pre_token_id", "fim_pre"),
    ("fim_suf_token_id", "fim_suf"),
    ("fim_mid_token_id", "fim_mid"),
    ("fim_pad_token_id", "fim_pad"),
    ("fim_rep_token_id", "fim_rep"),
    ("fim_sep_token_id", "fim_sep"),
    ("prefix_token_id", "fim_pre"),
    ("suffix_token_id", "fim_suf"),
    ("middle_token_id", "fim_mid"),
)


@dataclass
class Vocab:
    """Plain data: what llama.cpp's llama_vocab holds after load()."""

    model: str  # tokenizer.ggml.model: llama, gpt2, bert, t5, rwkv, gemma4, ...
    kind: str  # SPM, BPE, WPM, UGM, RWKV
    pre: str  # tokenizer.ggml.pre as written in the file
    pre_type: str  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_* in lower case
    texts: list[str]
    scores: list[float]
    attrs: list[int]
    token_to_id: dict[str, int]
    merges: list[str] = field(default_factory=list)
    ids: dict[str, int | None] = field(default_factory=dict)
    eog_ids: frozenset[int] = frozenset()
    add_space_prefix: bool = False
    add_bos: bool = False
    add_eos: bool = False
    add_sep: bool = False
    ignore_merges: bool = False
    clean_spaces: bool = False
    remove_extra_whitespaces: bool = False
    escape_whitespaces: bool = True
    treat_whitespace_as_suffix: bool = False
    lowercase: bool = False
    strip_accents: bool = False
    max_token_len: int = 0
    precompiled_charsmap: bytes = b""
    special_tokens: list[int] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.texts)


def _bool(meta: dict[str, Any], key: str, default: bool) -> bool:
    v = meta.get(K + key)
    return default if v is None else bool(v)


def load_vocab(gguf: GGUFFile) -> Vocab:
    """Build the vocabulary like llama_vocab::impl::load; raise ModelLoadError on bad metadata."""
    meta = gguf.metadata
    name = gguf.path
    model = meta.get(K + "model")
    if not isinstance(model, str):
        raise ModelLoadError(f"{name}: metadata has no tokenizer.ggml.model, so it carries no tokenizer")
    pre = meta.get(K + "pre", "")
    pre = pre if isinstance(pre, str) else ""
    ids: dict[str, int | None] = {k: None for k in ("bos", "eos", "eot", "eom", "unk", "sep", "pad", "mask")}
    ids.update({k: None for k in ("fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")})
    flags: dict[str, Any] = {"escape_whitespaces": True}
    merges: list[str] = []
    pre_type = "default"
    if model == "llama":
        kind = "SPM"
        ids.update(bos=1, eos=2, unk=0)
        flags.update(add_space_prefix=True, clean_spaces=False, add_bos=True, add_eos=False)
    elif model == "bert":
        kind = "WPM"
        ids.update(bos=101, unk=100, sep=102, pad=0, mask=103)
        flags.update(add_space_prefix=False, clean_spaces=True, add_bos=True, add_eos=False, add_sep=True)
    elif model in ("gpt2", "hybriddna", "whitespace", "gemma4"):
        kind = "BPE"
        raw = meta.get(K + "merges")
        if raw is None and not (model != "gemma4" and pre == "kimi-k2"):
            raise ModelLoadError(f"{name}: BPE tokenizer without tokenizer.ggml.merges")
        if raw is not None and not (isinstance(raw, list) and all(isinstance(m, str) for m in raw)):
            raise ModelLoadError(f"{name}: tokenizer.ggml.merges must be an array of strings")
        merges = list(raw or [])
        if model == "gemma4":
            pre = "gemma4"
        else:
            ids.update(bos=11, eos=11)
        flags.update(add_space_prefix=False, escape_whitespaces=False, clean_spaces=True)
        if pre == "":
            log.warning(
                "%s: missing pre-tokenizer type, using 'default' (generation quality will suffer)", name
            )
            pre_type = "default"
        elif pre in PRE_TYPES:
            pre_type, over = PRE_TYPES[pre]
            for key, value in over.items():
                if key == "bos_null":
                    ids["bos"] = None
                else:
                    flags[key] = value
        else:
            raise ModelLoadError(f"{name}: unknown pre-tokenizer type {pre!r} (tokenizer.ggml.pre)")
    elif model == "t5":
        kind = "UGM"
        ids.update(eos=1, unk=2, pad=0)
        flags.update(add_bos=False, add_eos=True)
        charsmap = meta.get(K + "precompiled_charsmap")
        if charsmap is not None:
            flags["precompiled_charsmap"] = np.asarray(charsmap).astype(np.uint8).tobytes()
    elif model == "rwkv":
        kind = "RWKV"
        flags.update(add_space_prefix=False, clean_spaces=False, add_bos=False, add_eos=False)
    else:
        raise ModelLoadError(f"{name}: unsupported tokenizer model {model!r} (tokenizer.ggml.model)")
    flags["add_space_prefix"] = _bool(meta, "add_space_prefix", flags.get("add_space_prefix", False))
    flags["remove_extra_whitespaces"] = _bool(meta, "remove_extra_whitespaces", False)

    texts = meta.get(K + "tokens")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts[:16]):
        raise ModelLoadError(f"{name}: tokenizer.ggml.tokens is missing or not an array of strings")
    n = len(texts)
    texts = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(texts)] if "" in texts else list(texts)
    scores_raw = meta.get(K + "scores")
    if scores_raw is not None:
        arr = np.asarray(scores_raw)
        if arr.ndim != 1 or arr.dtype.kind not in "fi" or len(arr) < n:
            raise ModelLoadError(f"{name}: tokenizer.ggml.scores must be {n} numbers")
        scores = arr[:n].astype(np.float32).tolist()
    else:
        scores = [0.0] * n
    types_raw = meta.get(K + "token_type")
    if types_raw is not None:
        types = np.asarray(types_raw)
        if types.ndim != 1 or types.dtype.kind not in "iu" or len(types) < n:
            raise ModelLoadError(f"{name}: tokenizer.ggml.token_type must be {n} integers")
        t64 = types[:n].astype(np.int64)
        t64 = np.where((t64 < 0) | (t64 >= len(_TYPE_TO_ATTR)), 0, t64)
        attrs: list[int] = _TYPE_TO_ATTR[t64].tolist()
    else:
        attrs = [ATTR_NORMAL] * n
    token_to_id = dict(zip(texts, range(n), strict=True))
    max_len = max((len(t.encode("utf-8")) for t in texts), default=0)

    # special ids from metadata, in llama.cpp's order (deprecated keys last)
    for key, role in _SPECIAL_KEYS:
        cur = ids[role]
        if cur is not None and cur >= n:
            log.warning("%s: default special token %s = %d out of vocab range, disabling", name, role, cur)
            ids[role] = cur = None
        v = meta.get(K + key)
        if v is None:
            continue
        try:
            new_id = int(v)
        except (TypeError, ValueError):
            continue
        if new_id < 0 or new_id >= n:
            log.warning("%s: bad special token %s = %d, using default id %s", name, key, new_id, cur)
        else:
            ids[role] = new_id
    flags["add_bos"] = _bool(meta, "add_bos_token", flags.get("add_bos", False))
    flags["add_eos"] = _bool(meta, "add_eos_token", flags.get("add_eos", False))
    flags["add_sep"] = _bool(meta, "add_sep_token", flags.get("add_sep", False))
    if pre_type == "gemma4" and not flags["add_bos"]:
        flags["add_bos"] = True
    lowercase = _bool(meta, "normalizer.lowercase", bool(flags.pop("lowercase", True)))
    strip_accents = _bool(meta, "normalizer.strip_accents", lowercase)

    vocab = Vocab(
        model=model,
        kind=kind,
        pre=pre,
        pre_type=pre_type,
        texts=texts,
        scores=scores,
        attrs=attrs,
        token_to_id=token_to_id,
        merges=merges,
        ids=ids,
        lowercase=lowercase,
        strip_accents=strip_accents,
        max_token_len=max_len,
        **flags,
    )
    _detect_specials(vocab)
    _per_model_attrs(vocab, meta)
    return vocab


def _find_first(vocab: Vocab, candidates: tuple[str, ...]) -> int | None:
    """The id llama.cpp's text scan picks among `candidates`: it walks an
    std::unordered_map, so with several present the hash-table order decides (replayed
    by stl_order)."""
    found = [t for t in candidates if t in vocab.token_to_id]
    if not found:
        return None
    if len(found) > 1:
        from pyllama.tokenizer.stl_order import first_in_walk

        found = [first_in_walk(vocab.texts, found)]
    return vocab.token_to_id[found[0]]


def _mark_control(vocab: Vocab, tid: int) -> None:
    if not vocab.attrs[tid] & ATTR_CONTROL:
        log.debug("control-looking token %d %r was not control-type; overriding", tid, vocab.texts[tid])
        vocab.attrs[tid] |= ATTR_CONTROL


def _detect_specials(vocab: Vocab) -> None:
    ids, attrs, t2i = vocab.ids, vocab.attrs, vocab.token_to_id
    for role, cands in (
        ("eot", _EOT_TEXTS),
        ("eom", _EOM_TEXTS),
        ("fim_pre", _FIM_PRE_TEXTS),
        ("fim_suf", _FIM_SUF_TEXTS),
        ("fim_mid", _FIM_MID_TEXTS),
        ("fim_pad", _FIM_PAD_TEXTS),
        ("fim_rep", _FIM_REP_TEXTS),
        ("fim_sep", _FIM_SEP_TEXTS),
    ):
        if ids[role] is None:
            tid = _find_first(vocab, cands)
            if tid is not None:
                ids[role] = tid
                _mark_control(vocab, tid)
    # control tokens whose text says "unused" are unused
    for tid, a in enumerate(attrs):
        if a & ATTR_CONTROL and not a & ATTR_UNUSED and "unused" in vocab.texts[tid]:
            attrs[tid] = a | ATTR_UNUSED
    eog: set[int] = {i for i in (ids["fim_pad"], ids["fim_rep"], ids["fim_sep"]) if i is not None}
    for text in _EOG_TEXTS:
        tid = t2i.get(text)
        if tid is not None:
            eog.add(tid)
            _mark_control(vocab, tid)
    for text in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):
        tid = t2i.get(text)
        if tid is not None:
            attrs[tid] = ATTR_USER_DEFINED
    for role in ("eos", "eot", "eom"):
        tid = ids[role]
        if tid is not None and tid not in eog:
            eog.add(tid)
            log.warning("special_%s_id is not in the end-of-generation set; adding it", role)
    texts = {vocab.texts[t]: t for t in eog if 0 <= t < vocab.n_tokens}
    if "<|end|>" in texts and (
        ("<|return|>" in texts and ("<|call|>" in texts or "<|calls|>" in texts))
        or (("<|call|>" in texts or "<|calls|>" in texts) and "<|flush|>" in texts)
    ):
        end_id = texts["<|end|>"]
        eog.discard(end_id)
        attrs[end_id] = ATTR_USER_DEFINED
    if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
        s_id = texts["</s>"]
        eog.discard(s_id)
        attrs[s_id] = ATTR_NORMAL
    vocab.eog_ids = frozenset(eog)
    # the special-token cache: control, user-defined and unknown tokens, longest first
    special = [i for i, a in enumerate(attrs) if a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
    lens = [len(vocab.texts[i].encode("utf-8")) for i in special]
    order = sorted(range(len(special)), key=lambda j: -lens[j])
    vocab.special_tokens = [special[j] for j in order]


def _per_model_attrs(vocab: Vocab, meta: dict[str, Any]) -> None:
    """Hard-coded lstrip/rstrip attributes llama.cpp sets by model name."""
    pre = meta.get(K + "pre", "") or ""
    arch = meta.get("general.architecture", "") or ""
    name = str(meta.get("general.name", "") or "").lower()
    t2i, attrs = vocab.token_to_id, vocab.attrs
    if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
        s in arch for s in ("nomic-bert-moe", "jina-bert-v3")
    ):
        if "<mask>" in t2i:
            attrs[t2i["<mask>"]] |= ATTR_LSTRIP
    elif "phi-3" in name or "phi3" in name:
        for tid in vocab.special_tokens:
            attrs[tid] |= ATTR_RSTRIP
        for text, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
            if text not in t2i:
                raise ModelLoadError(f"{vocab.model}: phi-3 vocabulary lacks {text!r}")
            tid = t2i[text]
            attrs[tid] = attrs[tid] | ATTR_RSTRIP if on else attrs[tid] & ~ATTR_RSTRIP
    elif "modern-bert" in name and "[MASK]" in t2i:
        attrs[t2i["[MASK]"]] |= ATTR_LSTRIP
