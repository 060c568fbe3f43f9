"""Every tokenizer family and 48 BPE pre-tokenizer types on small synthetic vocabularies,
against llama.cpp's ids (recorded with the oracle in data/synthetic_expected.json)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from pyllama.gguf_file import read_gguf
from pyllama.tokenizer import Tokenizer
from tests.tokenizer.synthetic import TEXTS, VocabSpec, all_specs, write_gguf

DATA = Path(__file__).parent / "data" / "synthetic_expected.json.gz"
SPECS = {s.name: s for s in all_specs()}


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    data = json.loads(gzip.decompress(DATA.read_bytes()))
    assert data["texts"] == TEXTS, "texts changed: re-run python -m tests.tokenizer.record_synthetic"
    results: dict[str, Any] = data["results"]
    return results


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic_vocabs")


_BUILT: dict[str, Tokenizer] = {}


def _tokenizer(spec: VocabSpec, d: Path) -> Tokenizer:
    if spec.name not in _BUILT:
        _BUILT[spec.name] = Tokenizer.from_gguf(read_gguf(write_gguf(spec, d / f"{spec.name}.gguf")))
    return _BUILT[spec.name]


def test_recorded_data_covers_every_family_and_many_pre_tokenizers(expected: dict[str, Any]) -> None:
    assert set(expected) == set(SPECS)
    kinds = {SPECS[n].model for n in expected}
    assert {"gpt2", "gemma4", "llama", "t5", "bert"} <= kinds
    assert len({SPECS[n].pre for n in expected if SPECS[n].model == "gpt2"}) >= 40


@pytest.mark.parametrize("name", sorted(SPECS))
def test_tokenize_matches_llama_cpp(name: str, expected: dict[str, Any], gguf_dir: Path) -> None:
    tok = _tokenizer(SPECS[name], gguf_dir)
    want = expected[name]["tokenize"]
    for key, add, parse in (("TT", True, True), ("FF", False, False)):
        got = [tok.tokenize(t, add_special=add, parse_special=parse) for t in TEXTS]
        bad = [(TEXTS[i], got[i], want[key][i]) for i in range(len(TEXTS)) if got[i] != want[key][i]]
        assert bad == [], f"{name} add_special={add} parse_special={parse}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_detokenize_matches_llama_cpp(name: str, expected: dict[str, Any], gguf_dir: Path) -> None:
    tok = _tokenizer(SPECS[name], gguf_dir)
    ids_list = expected[name]["tokenize"]["TT"]
    for key, rm, unparse in (("FF", False, False), ("TT", True, True)):
        want = expected[name]["detok"][key]
        got = [tok.detokenize_bytes(ids, rm, unparse).decode("utf-8", "surrogateescape") for ids in ids_list]
        bad = [(ids_list[i], got[i], want[i]) for i in range(len(ids_list)) if got[i] != want[i]]
        assert bad == [], f"{name} remove_special={rm} unparse_special={unparse}"


@pytest.mark.oracle
def test_recorded_ids_are_what_llama_cpp_says_now() -> None:
    from tests.tokenizer.record_synthetic import run_oracle

    results, ids = run_oracle()
    assert results == json.loads(gzip.decompress(DATA.read_bytes()))["results"]
    assert ids == json.loads(SPECIAL_IDS.read_text(encoding="utf-8"))


SPECIAL_IDS = Path(__file__).parent / "data" / "synthetic_special_ids.json"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_special_ids_and_attributes_match_llama_cpp(name: str, gguf_dir: Path) -> None:
    """bos/eos/eot/nl/pad/fim ids, the EOG set and every non-normal token attribute, as
    llama.cpp reported them (EOT here needs the unordered_map walk: 747 beats 745)."""
    want = json.loads(SPECIAL_IDS.read_text(encoding="utf-8"))[name]
    t = _tokenizer(SPECS[name], gguf_dir)
    got = {
        "bos": t.bos_id, "eos": t.eos_id, "eot": t.eot_id, "sep": t.sep_id, "nl": t.nl_id, "pad": t.pad_id,
        "fim": [t.fim_pre_id, t.fim_suf_id, t.fim_mid_id, t.fim_pad_id, t.fim_rep_id, t.fim_sep_id],
        "eog": sorted(t.eog_ids), "add_bos": t.add_bos, "add_eos": t.add_eos,
        "attrs_not_normal": {str(i): a for i, a in enumerate(t.vocab.attrs) if a != 4},
    }  # fmt: skip
    assert got == want
