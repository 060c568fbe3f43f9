"""Throughput and load-time budgets from issue 3 (measured on this 2-core machine)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pyllama.gguf_file import read_gguf
from pyllama.tokenizer import Tokenizer, bench_tokenizer, sample_text, tokenize_throughput

pytestmark = pytest.mark.slow


def test_smollm2_tokenizes_mixed_text_at_1_mb_per_s(smollm2_path: Path) -> None:
    tok = Tokenizer.from_gguf(read_gguf(smollm2_path))  # fresh: cold word cache
    text = sample_text()
    assert len(text.encode("utf-8")) >= 1 << 20
    assert sum(c > "\u3000" for c in text) > 10_000  # really has CJK in it
    best = max(tokenize_throughput(tok, text) for _ in range(2))
    print(f"SmolLM2 tokenize: {best:.2f} MB/s")
    assert best >= 1.0


def test_gemma_vocabulary_loads_in_under_2_s(gemma_path: Path) -> None:
    gguf = read_gguf(gemma_path)
    t0 = time.perf_counter()
    tok = Tokenizer.from_gguf(gguf)
    dt = time.perf_counter() - t0
    print(f"Gemma 262k vocabulary: {dt:.2f} s")
    assert tok.n_vocab == 262144
    assert dt < 2.0


def test_bench_report_has_the_numbers_the_cli_prints(smollm2_tok: Tokenizer) -> None:
    r = bench_tokenizer(smollm2_tok, n_bytes=20_000)
    assert r["bytes"] >= 20_000 and r["tokens"] > 1000
    assert r["mb_per_s"] > 0 and r["mb_per_s_warm"] > 0 and r["tokens_per_s"] > 0
