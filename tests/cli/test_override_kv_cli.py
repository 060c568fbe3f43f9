"""`pyllama run --override-kv`: SmolLM2's prompt gets a BOS only when told
tokenizer.ggml.add_bos_token=bool:true; bad syntax is an argument error naming llama.cpp's reason."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import pyllama


def test_run_with_override_kv(smollm2_path: Path) -> None:
    args = ["run", "-m", str(smollm2_path), "-p", "Hello world", "-n", "1", "--temp", "0", "-c", "256", "--verbose-prompt"]
    plain = pyllama(*args)
    bos = pyllama(*args, "--override-kv", "general.name=str:x", "--override-kv", "tokenizer.ggml.add_bos_token=bool:true")
    assert plain.returncode == 0 and bos.returncode == 0, (plain.stderr, bos.stderr)
    assert "prompt tokens (2): [19556, 905]" in plain.stderr, plain.stderr
    assert "prompt tokens (3): [1, 19556, 905]" in bos.stderr, bos.stderr
    bad = pyllama(*args, "--override-kv", "tokenizer.ggml.add_bos_token=bool:1")
    assert bad.returncode == 2 and "invalid boolean value for KV override" in bad.stderr
