"""`--list-devices`, `-cl/--cache-list` and `--completion-bash`: answers printed by the real
`pyllama-server` command (a subprocess, as a user or a script runs it), exit status 0, no
model loaded and no port opened, in llama-server's output shapes (common/arg.cpp)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.server.conftest import REPO
from tests.server.test_router import hub_entry


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    return subprocess.run([sys.executable, "-m", "asgi.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**base, **(env or {})})


def test_list_devices_is_llama_cpps_cpu_only_answer() -> None:
    r = run("--list-devices", "-m", "/no/such/model.gguf")  # exits while parsing: the model is never opened
    assert (r.returncode, r.stdout, r.stderr) == (0, "Available devices:\n  (none)\n", "")


def test_cache_list_numbers_the_cached_models(tmp_path: Path, smollm2_path: Path) -> None:
    cache = tmp_path / "hub"
    hub_entry(cache, "org/smol-GGUF", "smol-Q4_1.gguf", smollm2_path)
    hub_entry(cache, "org/smol-GGUF", "mmproj-smol-F16.gguf", smollm2_path)  # a companion file, not listed
    hub_entry(cache, "ggml-org/tinygemma3-GGUF", "tinygemma3-Q8_0.gguf", smollm2_path)
    r = run("-cl", env={"LLAMA_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("number of models in cache: 2\n"
                        "   1. ggml-org/tinygemma3-GGUF:Q8_0\n"
                        "   2. org/smol-GGUF:Q4_1\n")
    empty = run("--cache-list", env={"LLAMA_CACHE": str(tmp_path / "nothing")})
    assert (empty.returncode, empty.stdout) == (0, "number of models in cache: 0\n")


def test_completion_bash_completes_our_flags(tmp_path: Path) -> None:
    r = run("--completion-bash")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("_llama_completions() {\n") and r.stdout.endswith(
        "complete -F _llama_completions pyllama-server\n")
    script = tmp_path / "complete.sh"
    script.write_text(r.stdout)

    def complete(*words: str) -> list[str]:
        probe = (f'source {script}; COMP_WORDS=(pyllama-server {" ".join(words)}); '
                 f'COMP_CWORD={len(words)}; _llama_completions; printf "%s\\n" "${{COMPREPLY[@]}}"')
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line]

    assert complete("--api-pre") == ["--api-prefix"]
    assert set(complete("--spec-type", "x", "--spec-draft-n-m")) == {"--spec-draft-n-max", "--spec-draft-n-min"}
    assert "--no-cache-idle-slots" in complete("--no-cache-id")  # the --no- spelling of a toggle
    (tmp_path / "m.gguf").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert complete("-m", "") == ["m.gguf"]  # -m offers .gguf files
