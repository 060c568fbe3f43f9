"""`pyllama run` speculates through the scheduler: same greedy text, draft counts on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.engine.test_speculative import CODE


def run(smollm2_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pyllama.cli.main", "run", "-m", str(smollm2_path), "-p", CODE, "-n", "16",
           "--temp", "0", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_run_ngram_and_draft_model_same_text(smollm2_path: Path) -> None:
    plain = run(smollm2_path)
    ngram = run(smollm2_path, "--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
                "--spec-ngram-simple-size-m", "8", "--spec-type", "ngram-cache")
    drafted = run(smollm2_path, "-md", str(smollm2_path), "--spec-draft-n-max", "4", "--weights", "packed")
    assert plain.returncode == ngram.returncode == drafted.returncode == 0, (ngram.stderr, drafted.stderr)
    assert ngram.stdout == plain.stdout
    assert "accepted" in ngram.stderr and "accepted" not in plain.stderr
    assert "ngram-cache is not implemented" in ngram.stderr
    assert "accepted" in drafted.stderr
    bad = run(smollm2_path, "--spec-type", "bogus")
    assert bad.returncode == 1 and "unknown speculative type" in bad.stderr and "Traceback" not in bad.stderr
