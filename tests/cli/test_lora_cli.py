"""`pyllama run --lora / --lora-scaled`: the adapter's text equals the merged model's."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import pyllama
from tests.models.lora_synth import write_lora

ARGS = ["-p", "w5 w17 w9 w100", "-n", "8", "--temp", "0", "-c", "64", "--weights", "dense"]


def test_run_with_adapter_equals_merged_model(tmp_path: Path) -> None:
    files = write_lora("llama", tmp_path, user_scale=0.5)
    merged = pyllama("run", "-m", str(files.merged), *ARGS)
    base = pyllama("run", "-m", str(files.base), *ARGS)
    scaled = pyllama("run", "-m", str(files.base), "--lora-scaled", f"{files.adapter}:0.5", *ARGS)
    assert merged.returncode == 0 and scaled.returncode == 0, scaled.stderr
    assert scaled.stdout == merged.stdout != base.stdout
    off = pyllama("run", "-m", str(files.base), "--lora-scaled", f"{files.adapter}:0", *ARGS)
    assert off.stdout == base.stdout


def test_run_with_a_bad_adapter_is_one_line(tmp_path: Path) -> None:
    files = write_lora("llama", tmp_path)
    for flags in (["--lora", str(files.base)], ["--lora", str(tmp_path / "missing.gguf")]):
        out = pyllama("run", "-m", str(files.base), *flags, *ARGS)
        assert out.returncode == 1 and "lora" in out.stderr.lower()
        assert len([line for line in out.stderr.splitlines() if "error" in line]) == 1, out.stderr
    out = pyllama("run", "-m", str(files.base), "--lora-scaled", "x.gguf", *ARGS)
    assert out.returncode == 2 and "FNAME:SCALE" in out.stderr
