"""Small synthetic vocabularies written as vocab-only GGUF files.

The same texts are tokenized by pyllama and by llama.cpp (the llama-cpp-python oracle,
`record_synthetic.py`); the oracle's ids are stored in data/synthetic_expected.json so
the default test run needs no oracle. The BPE vocabulary is trained here on the test
texts (deterministically), so merges fire across every kind of pre-token and a
pre-tokenizer that splits in the wrong place produces different ids.
"""

from __future__ import annotations

import base64
import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import gguf

from pyllama.tokenizer.unicode import BYTE_TO_UNICODE, byte_encode

TEXTS: list[str] = [
    "Hello world",
    " Hello  world  ",
    "I'm sure you DON'T know, but we'll see. They've He'd she's",
    "1234567 3.14159 and 10,000,000 and 12345",
    "Café naïve résumé Zürich e\u0301 ﬁ Ａ",
    "Привет, мир! Γειά σου",
    "你好，世界！今天天气很好。こんにちは、カタカナ。안녕하세요",
    "line one\nline two\r\n\r\n  indented\tTab\n\n\n",
    "def f(x):\n    return x**2  # comment\n",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "emoji 😀🎉👍🏽 and ZWJ 👨\u200d👩\u200d👧",
    "a\u00a0b\u2003c\u3000d  \u0085e",
    "   ",
    "!!!???... ,,, ;; $5+3=8 <=> ^_^ ~|~",
    "HTTPSConnection getElementById camelCaseWord XMLHttpRequest",
    "١٢٣ ٤٥٦ Ⅻ ½ ²",
    "'s 'S 'LL 'Re x'd",
    "<mask> token  <mask>  end",
    "hello<tool>  world <tool> again",
    "Hello World. Hello World, ' quoted ' it 's and 're done ?",
    "ＡＢＣ AB ① ② e\u0301 ﬀ ｱ\u3000x\u00a0y",
    "",
]

_FUZZ_POOL = [
    *"aZq09 '\u2019\t\n\r\x0b\x0c.,!?-_/\\\"()[]{}<>$+=^`|~#@%&*:;",
    *["s", "t", "re", "ve", "ll", "d", "m", "S", "LL", "RE", "word", "Word", "WORD", "camelCase"],
    *["\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", "\u200b", "\u00ad", "\u0301", "\u0308", "\u064b"],
    *"éÀßЖжΩω你好世界こカ한글ąŁ",
    *"٣٤Ⅻ½²０１",
    *["😀", "👍🏽", "\U0002ebf0", "\u0378", "\ue000", "\U0001f9ff", "\x1c", "\x7f"],
    *["<|im_start|>", "<tool>", "<mask>", "</s>", "  ", "\n\n", "\r\n", "1234567", "12", " 1", "'s"],
]  # fmt: skip


def fuzz_texts(n: int = 80, seed: int = 1234) -> list[str]:
    """Deterministic random strings over characters that stress pre-tokenizers."""
    rng = random.Random(seed)
    return ["".join(rng.choice(_FUZZ_POOL) for _ in range(rng.randint(1, 30))) for _ in range(n)]


BASE_TEXTS = list(TEXTS)
TEXTS += fuzz_texts()

SPECIAL_CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<mask>", "<s>", "</s>", "<unk>"]
SPECIAL_USER = ["<tool>"]

# GGUF token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class VocabSpec:
    name: str
    model: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _train_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training on word counts; ties broken by the pair itself (deterministic)."""
    counts = Counter(words)
    seqs = [(list(w), c) for w, c in sorted(counts.items())]
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for sq, c in seqs:
            for pair in itertools.pairwise(sq):
                pairs[pair] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        a, b = best
        for sq, _ in seqs:
            i = 0
            while i < len(sq) - 1:
                if sq[i] == a and sq[i + 1] == b:
                    sq[i : i + 2] = [a + b]
                i += 1
    return merges


def _corpus_words() -> list[str]:
    words: list[str] = []
    for t in BASE_TEXTS * 3 + ["the quick brown fox jumps over the lazy dog " * 3]:
        cur = ""
        for ch in t:
            if ch in " \n" and cur.strip():
                words.append(cur)
                cur = ""
            cur += ch
        if cur:
            words.append(cur)
    return words


@cache
def _bpe_merges() -> tuple[tuple[str, str], ...]:
    return tuple(_train_merges([byte_encode(w) for w in _corpus_words()], 500))


def bpe_spec(name: str, pre: str | None, **extra: Any) -> VocabSpec:
    """A GPT-2 style byte-level BPE vocabulary (byte chars + trained merges + specials)."""
    merges = _bpe_merges()
    specials = set(SPECIAL_CONTROL + SPECIAL_USER)
    tokens = [t for t in dict.fromkeys(BYTE_TO_UNICODE + [a + b for a, b in merges]) if t not in specials]
    types = [NORMAL] * len(tokens)
    tokens += SPECIAL_CONTROL + SPECIAL_USER
    types += [CONTROL] * len(SPECIAL_CONTROL) + [USER_DEFINED] * len(SPECIAL_USER)
    extra.setdefault("bos_token_id", tokens.index("<|endoftext|>"))
    extra.setdefault("eos_token_id", tokens.index("<|im_end|>"))
    return VocabSpec(
        name, "gpt2", tokens, types, merges=[f"{a} {b}" for a, b in merges], pre=pre, extra=extra
    )


def gemma4_spec() -> VocabSpec:
    """SPM-style BPE (tokenizer.ggml.model gemma4): raw UTF-8 with U+2581, <0xXX> fallback."""
    words = [w.replace(" ", "\u2581") for w in _corpus_words()]
    merges = _train_merges([w for w in words if "\n" not in w], 300)
    chars = sorted({c for w in words for c in w if c != "\n"})
    tokens = [f"<0x{b:02X}>" for b in range(256)]
    types = [BYTE] * 256
    for t in list(dict.fromkeys(chars + [a + b for a, b in merges] + ["\n", "\n\n"])):
        if t in ("<bos>", "<eos>", "<pad>", *SPECIAL_USER) or t in tokens:
            continue
        tokens.append(t)
        types.append(NORMAL)
    tokens += ["<bos>", "<eos>", "<pad>", *SPECIAL_USER]
    types += [CONTROL, CONTROL, CONTROL, USER_DEFINED]
    extra = {"bos_token_id": tokens.index("<bos>"), "eos_token_id": tokens.index("<eos>")}
    return VocabSpec("gemma4", "gemma4", tokens, types, merges=[f"{a} {b}" for a, b in merges], extra=extra)


@cache
def _unigram_pieces() -> list[tuple[str, float]]:
    """Pieces with log-probability-like scores from corpus counts (for SPM and UGM)."""
    counts: Counter[str] = Counter()
    for w in _corpus_words():
        w = "\u2581" + w.strip(" ").replace(" ", "\u2581")
        for n in range(2, 6):
            for i in range(len(w) - n + 1):
                counts[w[i : i + n]] += 1
    chars = sorted({c for w in _corpus_words() for c in w if not c.isspace()} | {"\u2581"})
    common = [
        p for p, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 3 and "\n" not in p
    ]
    total = sum(counts.values())
    out = [(c, -8.0 - (i % 7) * 0.25) for i, c in enumerate(chars)]
    out += [(p, math.log(counts[p] / total) + len(p) * 0.5) for p in common[:400]]
    return out


def spm_spec(name: str, **extra: Any) -> VocabSpec:
    """A llama-2 style SPM vocabulary: <unk> <s> </s>, byte tokens, scored pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    for p, s in _unigram_pieces():
        if p not in tokens and p not in ("<|im_start|>", "<|im_end|>", "<tool>"):
            tokens.append(p)
            types.append(NORMAL)
            scores.append(s)
    tokens += ["<|im_start|>", "<|im_end|>", "<tool>"]
    types += [CONTROL, CONTROL, USER_DEFINED]
    scores += [0.0, 0.0, 0.0]
    return VocabSpec(name, "llama", tokens, types, scores=scores, extra=extra)


def ugm_spec(name: str, **extra: Any) -> VocabSpec:
    """A T5 style unigram vocabulary: <pad> </s> <unk>, scored pieces, one user-defined."""
    tokens = ["<pad>", "</s>", "<unk>"]
    types = [CONTROL, CONTROL, UNKNOWN]
    scores = [0.0, 0.0, 0.0]
    for p, s in _unigram_pieces():
        if p not in tokens and p not in ("<tool>", "<extra_id_0>"):
            tokens.append(p)
            types.append(NORMAL)
            scores.append(s)
    tokens += ["<tool>", "<extra_id_0>"]
    types += [USER_DEFINED, CONTROL]
    scores += [0.0, 0.0]
    extra.setdefault("add_space_prefix", True)
    extra.setdefault("remove_extra_whitespaces", True)
    return VocabSpec(name, "t5", tokens, types, scores=scores, extra=extra)


def wpm_spec(name: str, **extra: Any) -> VocabSpec:
    """A BERT vocabulary in llama.cpp's convention (word starts carry U+2581, no ##)."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    types = [CONTROL] * 100 + [UNKNOWN, CONTROL, CONTROL, CONTROL]
    seen = set(tokens)
    pieces: list[str] = []
    for w in _corpus_words():
        for word in w.lower().split():
            core = "".join(c for c in word if c.isalnum())
            if core:
                pieces += ["\u2581" + core, "\u2581" + core[:3], core[3:6], core[:2]]
    chars = sorted({c.lower() for w in _corpus_words() for c in w if not c.isspace()})
    pieces += chars + ["\u2581" + c for c in chars]
    for p in pieces:
        if p and p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(NORMAL)
    return VocabSpec(name, "bert", tokens, types, extra=extra)


# A SentencePiece precompiled_charsmap (XCDA) built by sentencepiece 0.2.3 from custom rules:
# ﬁ->fi, ﬀ->ff, fullwidth A B C 1 -> ASCII, ① ② -> 1 2, U+3000 and U+00A0 -> space,
# "AB" -> x, e + U+0301 -> é.
CHARSMAP = base64.b64decode(
    "AAQAAAAAAQBBAAEAEgAAgEIFAADMAAIAgQ0AABQAAICgPQAAAAAAgJGMAgCgGQAAoRkAAAIAAIAEAACAgAQCAIAdAACACQAA"
    "gQkAAAwAAIAPAACAkWEAAAYAAIAIAACACgAAgBkAAAAYAAAAGwAAABoAAAAdAAAAHAAAAB8AAAAeAAAArMACACAAAAAjAAAA"
    "IgAAAKHFAABltAMAo8UAAKLFAAApAAAAKAAAACsAAAAqAAAALQAAACwAAAAvAAAALgAAALzUAgAwAAAAMwAAADIAAAA1AAAA"
    "NAAAADcAAAA2AAAAOQAAADgAAAA7AAAAOgAAAD0AAAA8AAAAPwAAAD4AAABBAAAAQAAAAEMAAABCAAAARQAAAEQAAABHAAAA"
    "RgAAAEkAAABIAAAASwAAAEoAAABNAAAATAAAAE8AAABOAAAAUQAAAFAAAABTAAAAUgAAAFUAAABUAAAAVwAAAFYAAABZAAAA"
    "WAAAAFsAAABaAAAAXQAAAFwAAABfAAAAXgAAAGEAAABgAAAAYwAAAGIAAABlAAAAZAAAAGcAAABmAAAAaQAAAGgAAABrAAAA"
    "agAAAG0AAABsAAAAbwAAAG4AAABxAAAAcAAAAHMAAAByAAAAdQAAAHQAAAB3AAAAdgAAAHkAAAB4AAAAewAAAHoAAAB9AAAA"
    "fAAAAH8AAAB+AAAAgQAAAIAAAADClAAAggAAAIUAAACEAAAAhwAAAIYAAACJAAAAiAAAAIsAAACKAAAAjQAAAIwAAACPAAAA"
    "jgAAAJEAAACQAAAAkwAAAJIAAACVAAAAlAAAAJcAAACWAAAAmQAAAJgAAACbAAAAmgAAAJ0AAACcAAAAnwAAAJ4AAAChAAAA"
    "oAAAAOLoAADjtAAApQAAAKQAAACnAAAApgAAAKkAAACoAAAAqwAAAKoAAACtAAAArAAAAK8AAADvjAAAsQAAALAAAACzAAAA"
    "sgAAALUAAAC0AAAAtwAAALYAAAC5AAAAuAAAALsAAAC6AAAAvQAAALwAAAC/AAAAvgAAAMEAAADAAAAAwwAAAMIAAADFAAAA"
    "xAAAAMcAAADGAAAAyQAAAMgAAADLAAAAygAAAM0AAADMAAAAzwAAAM4AAADRAAAA0AAAANMAAADSAAAA1QAAANQAAADXAAAA"
    "1gAAANkAAADYAAAA2wAAANoAAADdAAAA3AAAAN8AAADeAAAA4QAAAOAAAADjAAAA4gAAAOUAAADkAAAA5wAAAOYAAADpAAAA"
    "6AAAAOsAAADqAAAA7QAAAOwAAADvAAAA7gAAAPEAAADwAAAA8wAAAPIAAAD1AAAA9AAAAPcAAAD2AAAA+QAAAPgAAAD7AAAA"
    "+gAAAP0AAAD8AAAA/wAAAP4AAAAgADEAMgBBAEIAQwBmZgBmaQB4AMOpAA=="
)


def write_gguf(spec: VocabSpec, path: Path) -> Path:
    """A vocab-only GGUF llama.cpp can load (llama architecture, tiny hparams, no tensors)."""
    w = gguf.GGUFWriter(str(path), arch="llama")
    extra = dict(spec.extra)
    w.add_name(extra.pop("general_name", f"synthetic-{spec.name}"))
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(spec.tokens))
    w.add_tokenizer_model(spec.model)
    if spec.pre is not None:
        w.add_tokenizer_pre(spec.pre)
    w.add_token_list(spec.tokens)
    w.add_token_types(spec.types)
    if spec.scores is not None:
        w.add_token_scores(spec.scores)
    if spec.merges is not None:
        w.add_token_merges(spec.merges)
    for key, value in extra.items():
        full = f"tokenizer.ggml.{key}"
        if isinstance(value, bool):
            w.add_bool(full, value)
        elif isinstance(value, int):
            w.add_uint32(full, value)
        elif isinstance(value, bytes):
            w.add_key_value(full, list(value), gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)
        else:
            w.add_string(full, str(value))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


BPE_PRES = [
    "gpt-2", "llama-bpe", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder", "deepseek-v3",
    "falcon", "starcoder", "smollm", "refact", "command-r", "stablelm2", "olmo", "dbrx", "poro-chat",
    "chatglm-bpe", "viking", "jais", "jais-2", "tekken", "codeshell", "bloom", "exaone", "exaone-moe",
    "chameleon", "minerva-7b", "gpt-4o", "granite-embed-multi-97m", "tiny_aya", "superbpe", "trillion",
    "bailingmoe", "seed-coder", "hunyuan", "hunyuan-dense", "kimi-k2", "ufakzeka", "grok-2", "afmoe",
    "laguna", "minimax-m2", "solar-open", "mellum2", "spark2_5", "youtu", "minicpm5", "default",
]  # fmt: skip


def all_specs() -> list[VocabSpec]:
    specs = [bpe_spec(f"bpe-{p}", p) for p in BPE_PRES]
    specs.append(bpe_spec("bpe-nopre", None))
    specs.append(bpe_spec("bpe-jina-lstrip", "jina-v2-de"))
    specs.append(bpe_spec("bpe-phi3-rstrip", "gpt-2", general_name="Phi-3 synthetic", add_eos_token=True))
    specs.append(bpe_spec("bpe-clean", "gpt-2", add_bos_token=True))
    specs.append(gemma4_spec())
    specs.append(spm_spec("spm"))
    specs.append(spm_spec("spm-noprefix", add_space_prefix=False, add_eos_token=True))
    specs.append(ugm_spec("ugm"))
    specs.append(ugm_spec("ugm-plain", add_space_prefix=False, remove_extra_whitespaces=False))
    specs.append(ugm_spec("ugm-charsmap", precompiled_charsmap=CHARSMAP))
    specs.append(wpm_spec("wpm"))
    specs.append(wpm_spec("wpm-cased", **{"normalizer.lowercase": False}))
    return specs
