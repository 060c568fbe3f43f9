"""The host-memory prompt cache (--cache-ram, --cache-idle-slots) through real servers.

One slot per server (except the idle-slot test), so every unrelated prompt takes the
slot from the previous one: without the cache the earlier prompt is lost, with it the
prompt comes back from host memory (`timings.cache_n`). Each test uses its own prompts,
so the tests do not depend on their order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerProcess, start

LONG = ("Once upon a time in a land far away, there lived a brave knight who traveled across mountains "
        "and rivers to find the legendary golden sword hidden deep within the enchanted forest of whispers.")
OTHER = "The quick brown fox"
# short unrelated prompts (about 20 tokens each, 28 cached with their answer: ~0.6 MiB of f16 K/V)
SHORT = [
    "Alice packed apples, bread and cheese into a basket before walking to the old mill by the river.",
    "Seven engineers argued for hours about whether the bridge needed another steel support beam.",
    "In winter the small harbour town smelled of salt, smoke and freshly baked cinnamon rolls.",
]


def server_args(model: Path, *extra: str) -> list[str]:
    return ["-m", str(model), "-c", "512", "-np", "1", "-v", *extra]


@pytest.fixture(scope="module")
def cached(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(server_args(smollm2_path, "--cache-ram", "100"), "cache-ram")


@pytest.fixture(scope="module")
def small(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(server_args(smollm2_path, "--cache-ram", "1"), "cache-ram-small")


@pytest.fixture(scope="module")
def off(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(server_args(smollm2_path, "--cache-ram", "0"), "cache-ram-off")


def complete(server: ServerProcess, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "n_predict": 8, "temperature": 0.0, "cache_prompt": True, **extra}
    res = httpx.post(server.base_url + "/completion", json=body, timeout=300)
    assert res.status_code == 200, res.text
    answer: dict[str, Any] = res.json()
    return answer


def test_prompt_comes_back_from_host_memory_with_the_same_text(cached: ServerProcess, off: ServerProcess) -> None:
    first = complete(cached, LONG)
    complete(cached, OTHER)  # takes the only slot: LONG goes to the host cache
    again = complete(cached, LONG)
    assert again["timings"]["cache_n"] > 0
    assert again["timings"]["prompt_n"] < first["timings"]["prompt_n"]
    assert again["content"] == first["content"]
    assert "updating prompt cache" in cached.log_path.read_text()
    # the same requests without the cache: everything is read again, and the text is the same
    off_first = complete(off, LONG)
    complete(off, OTHER)
    off_again = complete(off, LONG)
    assert off_again["timings"]["prompt_n"] == off_first["timings"]["prompt_n"] == first["timings"]["prompt_n"]
    assert off_again["content"] == off_first["content"] == again["content"]


def test_cache_ram_zero_disables_the_cache(off: ServerProcess) -> None:
    log = off.log_path.read_text()
    assert "--cache-idle-slots requires --cache-ram, disabling" in log
    assert "prompt cache is disabled" in log
    assert "updating prompt cache" not in log and "__TEST_TAG_CACHE_IDLE_SLOTS_ENABLED__" not in log


def test_the_size_limit_evicts_the_oldest_prompt(cached: ServerProcess, small: ServerProcess) -> None:
    results = {}
    for name, server in (("100 MiB", cached), ("1 MiB", small)):
        first = complete(server, SHORT[0])
        complete(server, SHORT[1])  # SHORT[0] to the cache
        complete(server, SHORT[2])  # SHORT[1] to the cache: with 1 MiB, SHORT[0] makes room for it
        results[name] = (first, complete(server, SHORT[0]))
    first, again = results["100 MiB"]
    assert again["timings"]["cache_n"] > 0 and again["content"] == first["content"]
    first, again = results["1 MiB"]
    assert again["timings"]["cache_n"] == 0 and again["timings"]["prompt_n"] == first["timings"]["prompt_n"]
    assert again["content"] == first["content"]
    assert "making room for prompt cache entry, removing oldest entry" in small.log_path.read_text()


@pytest.fixture(scope="module")
def idle(smollm2_path: Path) -> Iterator[ServerProcess]:
    args = ["-m", str(smollm2_path), "-c", "512", "-np", "2", "-v", "--kv-unified", "--cache-ram", "100"]
    yield from start(args, "cache-idle-slots")


def test_idle_slots_are_saved_and_cleared_with_a_unified_cache(idle: ServerProcess) -> None:
    assert "__TEST_TAG_CACHE_IDLE_SLOTS_ENABLED__" in idle.log_path.read_text()
    first = complete(idle, LONG, id_slot=0)
    assert "__TEST_TAG_CACHE_IDLE_SLOT__" not in idle.log_path.read_text()  # slot 1 held nothing
    complete(idle, OTHER, id_slot=1)
    assert "__TEST_TAG_CACHE_IDLE_SLOT__" in idle.log_path.read_text()
    slots = httpx.get(idle.base_url + "/slots").json()
    assert slots[0]["n_cached_tokens"] == 0 and slots[1]["n_cached_tokens"] > 0  # slot 0 was cleared
    again = complete(idle, LONG)
    assert again["timings"]["cache_n"] > 0 and again["content"] == first["content"]
