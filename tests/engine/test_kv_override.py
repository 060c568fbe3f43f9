"""--override-kv in the engine: llama.cpp's KEY=TYPE:VALUE parser (string_parse_kv_override's
limits and messages) and the overrides' effect on SmolLM2 as loaded by Model.load (the
tokenizer's BOS, the config's name and n_ctx_train, a wrong-typed override ignored)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pyllama.engine import Model
from pyllama.errors import InvalidRequestError
from pyllama.gguf_file import read_gguf
from pyllama.kv_override import KVOverride, parse_kv_override, parse_kv_overrides

PARSED = [
    ("a.b=int:42", KVOverride("a.b", "int", 42)),
    ("k=int:-7", KVOverride("k", "int", -7)),
    ("k=int: 12abc", KVOverride("k", "int", 12)),  # atol: leading blanks, stops at a non-digit
    ("k=int:abc", KVOverride("k", "int", 0)),  # atol: no digits is 0
    ("k=int:99999999999999999999", KVOverride("k", "int", (1 << 63) - 1)),  # saturates as strtol
    ("k=float:1.5", KVOverride("k", "float", 1.5)),
    ("k=float:-2e3x", KVOverride("k", "float", -2000.0)),
    ("k=float:.25", KVOverride("k", "float", 0.25)),
    ("k=float:x", KVOverride("k", "float", 0.0)),
    ("k=bool:true", KVOverride("k", "bool", True)),
    ("k=bool:false", KVOverride("k", "bool", False)),
    ("k=str:", KVOverride("k", "str", "")),
    ("k=str:a=b:c", KVOverride("k", "str", "a=b:c")),
    ("k=str:" + "x" * 127, KVOverride("k", "str", "x" * 127)),
    ("k" * 127 + "=int:1", KVOverride("k" * 127, "int", 1)),
]

ERRORS = [
    ("novalue", "malformed KV override 'novalue'"),
    ("=int:1", "malformed KV override '=int:1'"),
    ("k" * 128 + "=int:1", "malformed KV override"),
    ("k=str:" + "x" * 128, "value cannot exceed 127 chars"),
    ("k=str:" + "é" * 64, "value cannot exceed 127 chars"),  # 128 bytes: the C buffer counts bytes
    ("k=bool:True", "invalid boolean value for KV override 'k=bool:True'"),
    ("k=bool:1", "invalid boolean value for KV override"),
    ("k=bool:", "invalid boolean value for KV override"),
    ("k=integer:1", "invalid type for KV override 'k=integer:1'"),
    ("k=INT:1", "invalid type for KV override"),
    ("k=1", "invalid type for KV override 'k=1'"),
    ("k=", "invalid type for KV override"),
]


@pytest.mark.parametrize(("item", "expected"), PARSED, ids=[p[0][:24] for p in PARSED])
def test_parses_each_type_as_llama_cpp(item: str, expected: KVOverride) -> None:
    got = parse_kv_override(item)
    assert got == expected and type(got.value) is type(expected.value)


@pytest.mark.parametrize(("item", "message"), ERRORS, ids=[e[0][:24] for e in ERRORS])
def test_bad_items_give_llama_cpp_messages(item: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_kv_override(item)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_comma_lists_with_csv_quotes() -> None:
    assert parse_kv_overrides("a=int:1,b=bool:false,c=str:x") == [
        KVOverride("a", "int", 1), KVOverride("b", "bool", False), KVOverride("c", "str", "x")]
    assert parse_kv_overrides('a=str:x,"b=str:y,z"') == [KVOverride("a", "str", "x"), KVOverride("b", "str", "y,z")]
    with pytest.raises(InvalidRequestError, match="invalid boolean value for KV override 'b=bool:no'"):
        parse_kv_overrides("a=int:1,b=bool:no")


def load(path: Path, overrides: str = "") -> Model:
    return Model.load(path, n_ctx=0, kv_overrides=parse_kv_overrides(overrides) if overrides else ())


def test_add_bos_override_changes_tokenization(smollm2_path: Path) -> None:
    assert read_gguf(smollm2_path).metadata["tokenizer.ggml.add_bos_token"] is False  # the file's own value
    plain = load(smollm2_path).tokenizer
    bos = plain.bos_id
    assert plain.tokenize("Hello world", add_special=True)[0] != bos
    on = load(smollm2_path, "tokenizer.ggml.add_bos_token=bool:true").tokenizer
    tokens = on.tokenize("Hello world", add_special=True)
    assert tokens[0] == bos and tokens[1:] == plain.tokenize("Hello world", add_special=True)
    off = load(smollm2_path, "tokenizer.ggml.add_bos_token=bool:true,tokenizer.ggml.add_bos_token=bool:false")
    assert off.tokenizer.tokenize("Hello world", add_special=True)[0] == bos  # the first override of a key wins
    off = load(smollm2_path, "tokenizer.ggml.add_bos_token=bool:false").tokenizer
    assert off.tokenize("Hello world", add_special=True) == plain.tokenize("Hello world", add_special=True)


def test_name_and_context_length_overrides_reach_the_config(smollm2_path: Path) -> None:
    plain = load(smollm2_path)
    assert plain.config.n_ctx_train == 8192 and plain.config.name != "renamed"
    m = load(smollm2_path, "general.name=str:renamed,llama.context_length=int:1024,pyllama.test.new=float:2.5")
    assert m.config.name == "renamed" and m.metadata["general.name"] == "renamed"
    assert m.config.n_ctx_train == 1024 and m.n_ctx == 1024  # -c 0 takes the (overridden) training context
    assert m.metadata["pyllama.test.new"] == 2.5  # a key the file lacks is added


def test_wrong_type_and_chat_templates_are_ignored_with_a_warning(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """llama-model-loader's validate_override: a warning, and the file's value stays in force;
    llama_model_chat_template never reads overrides."""
    with caplog.at_level(logging.WARNING, logger="pyllama.kv_override"):
        m = load(smollm2_path, "llama.block_count=str:x,llama.rope.freq_base=int:5,tokenizer.ggml.add_bos_token=int:1,"
                 "tokenizer.ggml.tokens=str:x,tokenizer.chat_template=str:{{ 1 }}")
    assert m.config.n_layer == 30 and m.config.rope.freq_base == 100000.0
    assert not m.tokenizer.add_bos and len(m.metadata["tokenizer.ggml.tokens"]) == m.n_vocab
    assert m.chat_template is not None and "im_start" in m.chat_template
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Bad metadata override type for key 'llama.block_count', expected int but got str",
        "Bad metadata override type for key 'llama.rope.freq_base', expected float but got int",
        "Bad metadata override type for key 'tokenizer.ggml.add_bos_token', expected bool but got int",
        "Bad metadata override type for key 'tokenizer.ggml.tokens', expected arr but got str",
        "metadata override 'tokenizer.chat_template' ignored: chat templates are read from the file, as llama.cpp "
        "does (use --chat-template)",
    ]
