"""-t/-tb reach BLAS in the server process (threadpoolctl, read back through /props)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import ServerProcess, start

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def one_thread(smollm2_path: Path) -> Iterator[ServerProcess]:
    # OpenBLAS would start with 2 threads here: only -t can bring it to 1.
    yield from start(["-m", str(smollm2_path), "-c", "512", "-t", "1"], "threads1", {"OPENBLAS_NUM_THREADS": "2"})


@pytest.fixture(scope="module")
def two_threads(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "512", "-t", "2", "-tb", "2"], "threads2",
                     {"OPENBLAS_NUM_THREADS": "1"})


def blas_threads(server: ServerProcess) -> list[int]:
    with server.client() as c:
        r = c.post("/completion", json={"prompt": "Hello there, how", "n_predict": 4, "temperature": 0})
        assert r.status_code == 200
        props = c.get("/props").json()
    if not props["threads"]["blas"]:
        pytest.skip("no BLAS whose thread count threadpoolctl can read")
    return [lib["num_threads"] for lib in props["threads"]["blas"]]


def test_t1_limits_blas_to_one_thread(one_thread: ServerProcess) -> None:
    assert blas_threads(one_thread) == [1]
    with one_thread.client() as c:
        props = c.get("/props").json()
    assert props["threads"]["n_threads"] == 1 and props["threads"]["n_threads_batch"] == 1


def test_t2_gives_two_threads(two_threads: ServerProcess) -> None:
    assert blas_threads(two_threads) == [2]
