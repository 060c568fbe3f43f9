"""The real models against llama.cpp's recorded tokenizations (tests/golden/tokenization.json)."""

from __future__ import annotations

from typing import Any

import pytest

from pyllama.tokenizer import IncrementalDecoder, Tokenizer
from tests.tokenizer.conftest import GOLDEN_NAMES

pytestmark = pytest.mark.parity


def _cases(golden: Any, model: str) -> list[dict[str, Any]]:
    return [c for c in golden["cases"] if GOLDEN_NAMES[c["model"]] == model]


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_every_golden_string_tokenizes_to_llama_cpp_ids(
    model: str, golden_tokenization: Any, golden_toks: dict[str, Tokenizer]
) -> None:
    tok = golden_toks[model]
    cases = _cases(golden_tokenization, model)
    assert len(cases) == 51
    wrong = []
    for c in cases:
        ids = tok.tokenize(c["text"], add_special=c["add_special"], parse_special=c["parse_special"])
        if ids != c["ids"]:
            wrong.append((c["text"], c["add_special"], c["parse_special"], ids, c["ids"]))
    assert wrong == []


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_detokenizing_golden_ids_gives_back_the_text(
    model: str, golden_tokenization: Any, golden_toks: dict[str, Tokenizer]
) -> None:
    tok = golden_toks[model]
    n = 0
    for c in _cases(golden_tokenization, model):
        ids = c["ids"]
        if c["add_special"] and tok.add_bos:
            assert ids[0] == tok.bos_id
            assert tok.detokenize(ids, remove_special=True, unparse_special=True) == c["text"]
            ids = ids[1:]
        if not c["parse_special"]:
            continue
        # what llama-server's POST /detokenize returned (verified in the golden file)
        assert tok.tokens_to_str(ids) == c["text"]
        assert tok.detokenize(ids, unparse_special=True) == c["text"]
        n += 1
    assert n >= 40


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_pieces_and_single_token_detokenize(
    model: str, golden_tokenization: Any, golden_toks: dict[str, Tokenizer]
) -> None:
    tok = golden_toks[model]
    seen = 0
    for rec in golden_tokenization["pieces"]:
        if GOLDEN_NAMES[rec["model"]] != model:
            continue
        seen += 1
        if rec["kind"] == "tokenize_with_pieces":
            ids = tok.tokenize(rec["text"], add_special=False, parse_special=True)
            assert ids == [t["id"] for t in rec["tokens"]]
            for t in rec["tokens"]:
                piece = tok.token_to_piece(t["id"], special=True)
                want = t["piece"]
                assert piece == (bytes(want) if isinstance(want, list) else want.encode("utf-8"))
        else:
            assert tok.tokens_to_str([rec["id"]]) == rec["content"]
    assert seen >= 5


def test_special_ids_match_llama_cpp(smollm2_tok: Tokenizer, gemma_tok: Tokenizer) -> None:
    # values read from llama.cpp (llama-cpp-python 0.3.36) on the same files
    s = smollm2_tok
    assert (s.bos_id, s.eos_id, s.eot_id, s.pad_id, s.nl_id) == (1, 2, 0, 2, 198)
    assert (s.fim_pre_id, s.fim_suf_id, s.fim_mid_id, s.fim_pad_id, s.fim_rep_id, s.fim_sep_id) == (
        None, None, None, None, 4, None,
    )  # fmt: skip
    assert s.eog_ids == frozenset({0, 2, 4})
    assert not s.add_bos and not s.add_eos
    g = gemma_tok
    assert (g.bos_id, g.eos_id, g.eot_id, g.pad_id, g.nl_id) == (2, 1, 106, 0, 248)
    assert g.eog_ids == frozenset({1, 106, 212})
    assert g.add_bos and not g.add_eos
    assert g.n_vocab == 262144 and s.n_vocab == 49152
    assert g.is_eog(106) and not g.is_eog(2) and g.is_control(106)
    assert g.piece_text(106) == "<end_of_turn>"


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_incremental_decoder_streams_golden_ids_exactly(
    model: str, golden_tokenization: Any, golden_toks: dict[str, Tokenizer]
) -> None:
    tok = golden_toks[model]
    for c in _cases(golden_tokenization, model):
        if not c["parse_special"] or c["add_special"]:
            continue
        dec = IncrementalDecoder(tok, special=True)
        chunks = [dec.feed(t) for t in c["ids"]]
        chunks.append(dec.flush())
        assert "".join(chunks) == c["text"]
        for chunk in chunks:
            assert "\ufffd" not in chunk  # never half a character


def test_incremental_decoder_holds_back_partial_characters(smollm2_tok: Tokenizer) -> None:
    ids = smollm2_tok.tokenize("🤗", add_special=False)
    assert len(ids) > 1  # the emoji is split over byte-level tokens
    dec = IncrementalDecoder(smollm2_tok)
    out = [dec.feed(t) for t in ids]
    assert out[:-1] == [""] * (len(ids) - 1) and out[-1] == "🤗"
    # an unfinished character at the end comes out as U+FFFD on flush, then the decoder resets
    assert dec.feed(ids[0]) == ""
    assert dec.flush() == "\ufffd"
    assert dec.feed(ids[0]) == ""


def test_control_tokens_render_only_with_special(gemma_tok: Tokenizer) -> None:
    assert gemma_tok.token_to_piece(106) == b""
    assert gemma_tok.token_to_piece(106, special=True) == b"<end_of_turn>"
    ids = gemma_tok.tokenize("<start_of_turn>user\nHi<end_of_turn>", parse_special=True)
    assert gemma_tok.detokenize(ids) == "user\nHi"
    assert gemma_tok.detokenize(ids, remove_special=True, unparse_special=True) == (
        "<start_of_turn>user\nHi<end_of_turn>"
    )


def test_spm_segmentation_is_exact(gemma_tok: Tokenizer) -> None:
    """Cutting SPM input at space/pair barriers gives the ids of one big merge."""
    from pyllama.tokenizer.bench import mixed_text
    from pyllama.tokenizer.spm import SPMTokenizer

    spm = SPMTokenizer(gemma_tok.vocab)
    text = mixed_text(4000, seed=3).replace("\n", " ").replace(" ", "\u2581")
    whole = spm._merge(text)
    out: list[int] = []
    spm.encode(text, out)  # space barriers only
    assert out == whole
    spm._merged_chars = 10**9  # force the character-pair table
    spm._cache.clear()
    out = []
    spm.encode(text, out)
    assert spm._pairs is not None and out == whole


def test_double_bos_warns_like_llama_cpp(gemma_tok: Tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pyllama.tokenizer"):
        ids = gemma_tok.tokenize("<bos>Hi", add_special=True, parse_special=True)
    assert ids[:2] == [2, 2]
    assert "starts with 2 BOS tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pyllama.tokenizer"):
        gemma_tok.tokenize("<bos>Hi", add_special=True, parse_special=False)
    assert "BOS" not in caplog.text
