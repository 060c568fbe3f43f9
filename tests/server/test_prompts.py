"""Prompt shapes and the /infill layout, with SmolLM2's real tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi.errors import BadRequest
from asgi.prompts import format_infill, tokenize_mixed, tokenize_prompts
from pyllama.engine import Model


@pytest.fixture(scope="module")
def tok(smollm2_path: Path) -> Any:
    return Model.load(smollm2_path, n_ctx=64).tokenizer


def test_prompt_shapes(tok: Any) -> None:
    hello = tok.tokenize("Hello", False, True)
    assert tokenize_prompts(tok, "Hello") == [hello]
    assert tokenize_prompts(tok, [1, 2, 3]) == [[1, 2, 3]]
    assert tokenize_prompts(tok, ["Hello", 7]) == [[*hello, 7]]
    assert tokenize_prompts(tok, ["Hello", "Hello"]) == [hello, hello]  # no ids: two prompts
    assert tokenize_prompts(tok, [{"prompt_string": "Hello"}, [5, 6]]) == [hello, [5, 6]]
    assert tokenize_mixed(tok, "<|im_start|>", False, True) == [1]
    for bad in (None, [], [{"x": 1}], [1.5]):
        with pytest.raises(BadRequest):
            tokenize_prompts(tok, bad)


def test_infill_layout(tok: Any) -> None:
    """llama-server's repo-level FIM pattern; SmolLM2 has no FIM tokens, so three of its
    special tokens stand in for <fim_prefix>, <fim_suffix> and <fim_middle>."""
    tok.fim_pre_id, tok.fim_suf_id, tok.fim_mid_id = 7, 8, 9
    try:
        sep, rep = tok.fim_sep_id, tok.fim_rep_id
        out = format_infill(tok, input_prefix="def add(a, b):\n", input_suffix="\n", prompt_tokens=[],
                            input_extra=[{"filename": "util.py", "text": "x = 1"}], n_batch=512, n_predict=16,
                            n_ctx=2048)
        prefix = tok.tokenize("def add(a, b):\n", False, False)
        suffix = tok.tokenize("\n", False, False)
        assert out[-1] == 9
        assert out[-(len(suffix) + 2):-1] == [8, *suffix]
        assert out[-(len(suffix) + len(prefix) + 3):-(len(suffix) + 2)] == [7, *prefix]
        head = out[: -(len(suffix) + len(prefix) + 3)]
        assert sep is None  # SmolLM2 has <repo_name> but no file separator: snippets get a text divider
        t = lambda text: tok.tokenize(text, False, False)  # noqa: E731
        assert head == [rep, *t("myproject\n"), *t("\n\n--- snippet ---\n\n"), *t("x = 1")]
        spm = format_infill(tok, input_prefix="a", input_suffix="b", prompt_tokens=[], input_extra=[],
                            n_batch=512, n_predict=16, n_ctx=2048, spm_infill=True)
        assert spm[-1] == 9 and spm.index(8) < spm.index(7)  # suffix first
    finally:
        tok.fim_pre_id = tok.fim_suf_id = tok.fim_mid_id = None
