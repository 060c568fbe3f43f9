"""-t/-tb through threadpoolctl: the hook the scheduler enters, and `pyllama run -t`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyllama.cli.blas_threads import DEFAULT_THREADS, BlasThreads, get_threads, set_threads
from pyllama.engine import Model
from pyllama.sampling import SamplingParams
from pyllama.scheduler import Event, Final, Scheduler, Task

pytestmark = pytest.mark.skipif(get_threads() is None, reason="no BLAS whose threads threadpoolctl can set")


@pytest.fixture
def keep_threads() -> Iterator[None]:
    before = get_threads()
    yield
    if before is not None:
        set_threads(before)


def test_hook_uses_t_for_one_token_and_tb_for_more(keep_threads: None) -> None:
    hook = BlasThreads(1, 2)
    assert get_threads() == 1  # set when the hook is built
    with hook(7):
        assert get_threads() == 2
    with hook(1):
        assert get_threads() == 1
    assert BlasThreads().n_threads == DEFAULT_THREADS and BlasThreads(2).n_threads_batch == 2
    with pytest.raises(ValueError):
        BlasThreads(0)


def test_scheduler_enters_the_hook_per_pass(smollm2_path: Path, keep_threads: None) -> None:
    seen: list[tuple[int, int | None]] = []
    hook = BlasThreads(1, 2)

    def recording(n_tokens: int):  # type: ignore[no-untyped-def]
        seen.append((n_tokens, None))
        return hook(n_tokens)

    model = Model.load(smollm2_path, n_ctx=256, weights="packed")
    s = Scheduler(model, threads=recording)
    finals: list[Final] = []

    def emit(e: Event) -> None:
        if isinstance(e, Final):
            finals.append(e)

    prompt = model.tokenizer.tokenize("The capital of France is")
    s.submit(Task(prompt, SamplingParams(temperature=0.0), n_predict=3, cache_prompt=False), emit)
    while not finals:
        s.step()
    counts = [n for n, _ in seen]
    assert counts[0] > 1 and counts[-1] == 1, counts  # the prompt on -tb, the decode steps on -t
    assert get_threads() == 1


def test_run_threads_flags(smollm2_path: Path) -> None:
    """`pyllama run -t 2 -tb 2` in a fresh process: accepted, and a bad value is one line."""
    cmd = [sys.executable, "-m", "pyllama.cli.main", "run", "-m", str(smollm2_path), "-p", "Hi", "-n", "2", "--temp", "0"]
    ok = subprocess.run([*cmd, "-t", "2", "-tb", "2"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, "-t", "x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
