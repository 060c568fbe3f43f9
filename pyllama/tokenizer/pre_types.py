"""The pre-tokenizer table: `tokenizer.ggml.pre` names -> llama.cpp's pre-tokenizer type.

Copied from the if/else chain in llama-vocab.cpp (`llama_vocab::impl::load`), with the
flags each branch sets on top of the BPE defaults (clean_spaces=True). A name not listed
here is refused at load, as llama.cpp refuses it.
"""

from __future__ import annotations

from typing import Any

# tokenizer.ggml.pre -> (pre type, overrides). Overrides are applied on top of the BPE
# defaults (clean_spaces=True), exactly as the if/else chain in llama-vocab.cpp does.
PRE_TYPES: dict[str, tuple[str, dict[str, Any]]] = {}


def _pre(names: tuple[str, ...], pre_type: str, **overrides: Any) -> None:
    for n in names:
        PRE_TYPES[n] = (pre_type, overrides)


_NC: dict[str, Any] = {"clean_spaces": False}
_pre(("default",), "default")
_pre(("minicpm5",), "minicpm5", ignore_merges=True)
_pre(
    (
        "llama3",
        "llama-v3",
        "llama-bpe",
        "falcon3",
        "falcon-h1",
        "pixtral",
        "midm-2.0",
        "lfm2",
        "jina-v5-nano",
    ),
    "llama3",
    ignore_merges=True,
    add_bos=True,
)
_pre(("deepseek-llm",), "deepseek_llm", **_NC)
_pre(("deepseek-coder",), "deepseek_coder", **_NC)
_pre(("deepseek-v3",), "deepseek3_llm", **_NC)
_pre(("spark2_5",), "spark2_5", **_NC)
_pre(("youtu",), "youtu", clean_spaces=False, ignore_merges=True)
_pre(("falcon",), "falcon")
_pre(("mpt",), "mpt")
_pre(("starcoder",), "starcoder")
_pre(
    (
        "gpt-2",
        "phi-2",
        "jina-es",
        "jina-de",
        "gigachat",
        "jina-v2-es",
        "jina-v2-de",
        "a.x-4.0",
        "mellum",
        "modern-bert",
    ),
    "gpt2",
)
_pre(("jais-2",), "jais2")
_pre(("gemma4", "granite-embed-multi-311m"), "gemma4", escape_whitespaces=True)
_pre(("sarvam-moe",), "sarvam_moe", escape_whitespaces=True, clean_spaces=False)
_pre(("jina-v1-en", "jina-v2-code", "roberta-bpe"), "gpt2", add_sep=True)
_pre(("whitespace",), "whitespace", lowercase=False)
_pre(("refact",), "refact")
_pre(("command-r",), "command_r", **_NC)
_pre(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2"), "qwen2", **_NC)
_pre(("qwen35",), "qwen35", **_NC)
_pre(("stablelm2",), "stablelm2")
_pre(("olmo",), "olmo")
_pre(("dbrx",), "dbrx")
_pre(("smaug-bpe",), "smaug")
_pre(("poro-chat",), "poro", **_NC)
_pre(("chatglm-bpe",), "chatglm4", bos_null=True)
_pre(("glm4", "glm5"), "chatglm4", bos_null=True, ignore_merges=True)
_pre(("viking",), "viking", **_NC)
_pre(("jais",), "jais")
_pre(("tekken",), "tekken", clean_spaces=False, ignore_merges=True, add_bos=True)
_pre(("smollm",), "smollm", **_NC)
_pre(("codeshell",), "codeshell")
_pre(("bloom",), "bloom")
_pre(("gpt3-finnish",), "gpt3_finnish")
_pre(("exaone",), "exaone")
_pre(("exaone4",), "gpt2")
_pre(("exaone-moe",), "exaone_moe")
_pre(("chameleon",), "chameleon", add_bos=True, clean_spaces=False)
_pre(("minerva-7b",), "minerva")
_pre(("megrez",), "qwen2")
_pre(("gpt-4o", "llama4", "kanana2", "talkie"), "gpt4o", **_NC)
_pre(("granite-embed-multi-97m",), "granite_emb_multi", clean_spaces=False, ignore_merges=True)
_pre(("tiny_aya", "cohere2moe"), "tiny_aya", **_NC)
for _name, _type in (
    ("superbpe", "superbpe"),
    ("trillion", "trillion"),
    ("granite-docling", "granite_docling"),
    ("bailingmoe", "bailingmoe"),
    ("bailingmoe2", "bailingmoe"),
    ("llada-moe", "bailingmoe"),
    ("seed-coder", "seed_coder"),
    ("hunyuan", "hunyuan"),
    ("hunyuan-dense", "hunyuan_dense"),
    ("hy_v4", "hy_v4"),
    ("joyai-llm", "joyai_llm"),
    ("kimi-k2", "kimi_k2"),
    ("ufakzeka", "ufakzeka"),
    ("grok-2", "grok_2"),
    ("afmoe", "afmoe"),
    ("laguna", "laguna"),
    ("minimax-m2", "minimax_m2"),
    ("solar-open", "solar_open"),
):
    _pre((_name,), _type, **_NC)
_pre(("mellum2",), "mellum2")

KNOWN_PRE_TOKENIZERS: frozenset[str] = frozenset(PRE_TYPES)
