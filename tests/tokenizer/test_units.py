"""Small behaviours: errors, clean-up passes, byte decoding, the pre-tokenizer tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyllama.errors import InvalidRequestError, ModelLoadError
from pyllama.gguf_file import read_gguf
from pyllama.tokenizer import IncrementalDecoder, Tokenizer
from pyllama.tokenizer import unicode as uni
from pyllama.tokenizer.bpe import bpe_merge, merge_ranks
from pyllama.tokenizer.detokenize import clean_spaces, decode_gpt2_text
from pyllama.tokenizer.pre_types import KNOWN_PRE_TOKENIZERS
from pyllama.tokenizer.pretokenize import PreTokenizer
from pyllama.tokenizer.pretokenizer_regexes import PRE_TYPE_REGEXES
from pyllama.tokenizer.special import Fragment, SpecialSplitter
from pyllama.tokenizer.vocab import ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP, ATTR_UNKNOWN
from tests.tokenizer.synthetic import VocabSpec, write_gguf


def test_clean_spaces_passes_like_llama_cpp() -> None:
    assert clean_spaces(b"Hello , world ! Is it ?") == b"Hello, world! Is it?"
    assert clean_spaces(b"a ' b") == b"a'b"
    assert clean_spaces(b"it 's I 'm we 're you 've don 't he 'll") == b"it's I'm we're you've don 't he 'll"
    assert clean_spaces(b"") == b""


def test_gpt2_byte_decoding_and_unknown_marker() -> None:
    assert decode_gpt2_text("ĠHello") == b" Hello"
    assert decode_gpt2_text("Ċ") == b"\n"
    assert decode_gpt2_text("a\u4e00") == b"a[UNK_BYTE_0xe4b880a\xe4\xb8\x80]"


def test_bpe_merges_lowest_rank_leftmost_first() -> None:
    ranks = merge_ranks(["a a", "b c", "aa a"])
    assert bpe_merge(list("aaa"), ranks) == ["aaa"]
    # after "aa" forms, the pair (a, a) still outranks (aa, a)
    assert bpe_merge(list("aaaa"), ranks) == ["aa", "aa"]
    assert bpe_merge(list("aaa"), merge_ranks(["a a"])) == ["aa", "a"]
    assert bpe_merge(list("abc"), ranks) == ["a", "bc"]
    assert merge_ranks(["x y", "x y", "nospace"]) == {("x", "y"): 0, ("", ""): 2}


def test_every_pre_tokenizer_compiles() -> None:
    assert len(KNOWN_PRE_TOKENIZERS) > 80
    for pre_type, (regexes, _) in PRE_TYPE_REGEXES.items():
        words = PreTokenizer(regexes).split("Hello, wörld! 123 你好 \n\n  x's")
        assert "".join(words) == "Hello, wörld! 123 你好 \n\n  x's", pre_type


def test_unicode_tables_are_llama_cpps_not_pythons() -> None:
    assert uni.category(0x2EBF0) == uni.LETTER  # CJK Ext. I (Unicode 15.1); Python 3.11 says Cn
    assert uni.category(0x1CC00) == uni.UNDEFINED  # Unicode 16
    assert uni.category(ord("a")) == uni.LETTER and uni.category(ord("7")) == uni.NUMBER
    assert {c for c in range(128) if c in uni.WHITESPACE} == {9, 10, 11, 12, 13, 32}
    assert uni.tolower(ord("Ä")) == ord("ä") and uni.nfd_first(ord("é")) == ord("e")
    assert uni.collapse("aé 1²\u3000,") == "a\xd2 1\xd1\x0b,"


def _tiny(tmp_path: Path, tokens: list[str], model: str = "gpt2", pre: str | None = "gpt-2") -> Tokenizer:
    spec = VocabSpec("tiny", model, tokens, [1] * len(tokens), merges=["a b"], pre=pre)
    return Tokenizer.from_gguf(read_gguf(write_gguf(spec, tmp_path / "tiny.gguf")))


def test_bad_vocabularies_raise_model_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="pre-tokenizer"):
        _tiny(tmp_path, ["a", "b", "ab"], pre="no-such-pre")
    with pytest.raises(ModelLoadError, match="tokenizer model"):
        _tiny(tmp_path, ["a"], model="plamo3")


def test_out_of_range_ids_are_clear_errors(tmp_path: Path) -> None:
    tok = _tiny(tmp_path, ["a", "b", "ab"])
    assert tok.tokenize("abab", add_special=False) == [2, 2]
    with pytest.raises(InvalidRequestError, match="out of range"):
        tok.token_to_piece(99)
    with pytest.raises(InvalidRequestError, match="out of range"):
        tok.detokenize([0, -1])
    with pytest.raises(InvalidRequestError, match="out of range"):
        IncrementalDecoder(tok).feed(3)


def test_fused_digit_gpt2_splitter_equals_the_two_stage_chain() -> None:
    from pyllama.tokenizer.pretokenize import compile_stage
    from tests.tokenizer.synthetic import fuzz_texts

    regexes = PRE_TYPE_REGEXES["smollm"][0]
    fused = PreTokenizer(regexes)
    chained = PreTokenizer(regexes)
    chained._stages = [compile_stage(r) for r in regexes]
    chained._views = {v for _, v in chained._stages}
    assert fused._stages != chained._stages
    for text in [*fuzz_texts(400, seed=7), "a  1", "x \t 12 ", "  3", "'s9 '1"]:
        assert fused.split(text) == chained.split(text), text


def test_non_text_input_is_a_clear_error(tmp_path: Path) -> None:
    tok = _tiny(tmp_path, ["a", "b", "ab"])
    with pytest.raises(InvalidRequestError, match="surrogate"):
        tok.tokenize("a\ud800b")
    with pytest.raises(InvalidRequestError, match="needs a str"):
        tok.tokenize(b"ab")  # type: ignore[arg-type]
    assert tok.all_pieces() == [b"a", b"b", b"ab"]


def _reference_split(splitter: SpecialSplitter, text: str, parse_special: bool) -> list[Fragment]:
    """tokenizer_st_partition written the direct way (every token over every fragment)."""
    frags: list[Fragment] = [(0, len(text))] if text else []
    for tid in splitter._order:
        attr, tok = splitter._attrs[tid], splitter._texts[tid]
        if not parse_special and attr & (ATTR_CONTROL | ATTR_UNKNOWN):
            continue
        out: list[Fragment] = []
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
                continue
            pos, end = frag
            while (m := text.find(tok, pos, end)) >= 0:
                left = m
                while attr & ATTR_LSTRIP and left > pos and text[left - 1] in " \t\n\v\f\r":
                    left -= 1
                if left > pos:
                    out.append((pos, left))
                out.append(tid)
                pos = m + len(tok)
                while attr & ATTR_RSTRIP and pos < end and text[pos] in " \t\n\v\f\r":
                    pos += 1
            if pos < end:
                out.append((pos, end))
        frags = out
    return frags


@pytest.mark.parametrize("name", ["bpe-jina-lstrip", "bpe-phi3-rstrip", "spm", "gemma4"])
def test_special_splitting_equals_the_direct_algorithm(name: str, tmp_path: Path) -> None:
    from tests.tokenizer.synthetic import all_specs, fuzz_texts

    spec = next(s for s in all_specs() if s.name == name)
    vocab = Tokenizer.from_gguf(read_gguf(write_gguf(spec, tmp_path / "v.gguf"))).vocab
    vocab.attrs[vocab.token_to_id["<tool>"]] |= ATTR_LSTRIP | ATTR_RSTRIP
    splitter = SpecialSplitter(vocab)
    texts = [*fuzz_texts(300, seed=99), " <tool>  <tool> x <tool>"]
    for text in [*texts, "".join(texts) * 30]:  # the long one takes the trie-regex path
        for parse in (True, False):
            assert splitter.split(text, parse) == _reference_split(splitter, text, parse)


LLAMA_SRC = Path("/work/llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp/src")


def test_committed_unicode_tables_are_llama_cpps() -> None:
    from pyllama.tokenizer import unicode_tables
    from pyllama.tokenizer.gen_unicode_tables import parse

    src = LLAMA_SRC / "unicode-data.cpp"
    if not src.exists():
        pytest.skip(f"{src} not present")
    tables = parse(src.read_text(encoding="utf-8"))
    flat = [n for row in tables["unicode_ranges_flags"] for n in row]
    assert tuple(flat) == unicode_tables.FLAG_RANGES
    assert tuple(n for (n,) in tables["unicode_set_whitespace"]) == unicode_tables.WHITESPACE
    assert tuple(n for row in tables["unicode_map_lowercase"] for n in row) == unicode_tables.LOWERCASE
    assert tuple(n for row in tables["unicode_ranges_nfd"] for n in row) == unicode_tables.NFD_RANGES


def test_unordered_map_walk_replay() -> None:
    from pyllama.tokenizer.stl_order import _rehash_points, first_in_walk, hash_bytes, iteration_order

    # _Hash_bytes("hello", 5, 0xc70f6907) from libstdc++ itself
    assert int(hash_bytes([b"hello"])[0]) == 2762169579135187400
    # std::unordered_map<std::string, int> filled with "k0".."k13" walks in this order (g++ 12)
    assert _rehash_points(30) == [(0, 13), (13, 29), (29, 59)]
    order = iteration_order([f"k{i}".encode() for i in range(14)]).tolist()
    assert order == [13, 0, 2, 12, 5, 9, 1, 6, 3, 4, 7, 8, 10, 11]  # what the C++ program printed
    assert (
        first_in_walk(["<|endoftext|>", "a", "<|im_end|>"], ["<|endoftext|>", "<|im_end|>"]) == "<|im_end|>"
    )
