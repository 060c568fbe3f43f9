"""pyllama.prompt_cache on a real KVCache (no model needed): what is stored, what is
restored, and the byte and token limits, as llama-server's server_prompt_cache does them."""

from __future__ import annotations

import numpy as np
import pytest

from pyllama.kv_cache import KVCache
from pyllama.prompt_cache import MIB, PromptCache

N_LAYER, N_HEAD_KV, DIM = 2, 2, 32
# bytes one token takes in the cache (f16 K and V for every layer)
TOKEN_BYTES = N_LAYER * 2 * N_HEAD_KV * DIM * 2


def make_kv(n_seq: int = 2, n_ctx: int = 4096, kind: str = "f16") -> KVCache:
    return KVCache(N_LAYER, n_seq, n_ctx, N_HEAD_KV, DIM, DIM, kind, kind)


def fill(kv: KVCache, seq: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in range(N_LAYER):
        k = rng.standard_normal((n, N_HEAD_KV, DIM)).astype(np.float32)
        v = rng.standard_normal((n, N_HEAD_KV, DIM)).astype(np.float32)
        kv.write(layer, seq, 0, k, v)
    kv.commit(seq, n)


def test_save_then_load_restores_tokens_and_exact_kv() -> None:
    kv = make_kv()
    fill(kv, 0, 40, seed=1)
    tokens = list(range(100, 140))
    cache = PromptCache(100, 4096)
    assert cache.save(kv, 0, tokens, lora=(0.5,))
    assert cache.size() == 40 * TOKEN_BYTES  # f16 values kept as float16
    assert not cache.save(kv, 0, tokens[:30], lora=(0.5,))  # a prefix of a cached prompt: already there
    ks, vs = kv.seq_state(0)
    kv.truncate(0, 0)
    entry = cache.load(kv, 1, [], [*tokens[:35], 7, 8, 9])  # another slot, a longer prompt sharing 35 tokens
    assert entry is not None and entry.tokens == tokens and entry.lora == (0.5,)
    assert kv.length(1) == 40 and cache.states == []  # taken out of the cache
    ks1, vs1 = kv.seq_state(1)
    for a, b in zip(ks + vs, ks1 + vs1, strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_keeps_the_slot_when_it_is_the_better_start() -> None:
    kv = make_kv()
    fill(kv, 0, 20, seed=2)
    cache = PromptCache(100, 4096)
    cache.save(kv, 0, list(range(20)))
    # the slot already holds the whole new prompt's prefix: nothing better in the cache
    assert cache.load(kv, 1, list(range(30)), list(range(25))) is None
    # an entry that would keep under a quarter of itself is never taken
    assert cache.best([], list(range(4)) + [999] * 10) is None
    assert cache.best([], list(range(5)) + [999] * 10) is not None


def test_byte_limit_evicts_oldest_first_and_skips_oversized() -> None:
    kv = make_kv(n_seq=1)
    per_entry = 20 * TOKEN_BYTES
    limit_mib = 1
    n_fit = MIB // per_entry
    cache = PromptCache(limit_mib, 0)
    for i in range(n_fit + 3):
        fill(kv, 0, 20, seed=i)
        assert cache.save(kv, 0, [1000 * (i + 1) + t for t in range(20)])
        cache.update()
    assert len(cache.states) == n_fit and cache.size() <= MIB
    assert cache.states[0].tokens[0] == 1000 * 4  # the three oldest went first
    fill(kv, 0, MIB // TOKEN_BYTES + 1, seed=99)  # one entry larger than the whole limit
    assert not cache.save(kv, 0, list(range(MIB // TOKEN_BYTES + 1)))
    assert len(cache.states) == n_fit  # and nothing was evicted for it


def test_token_limit_and_no_limit() -> None:
    kv = make_kv(n_seq=1)
    cache = PromptCache(-1, 50)  # --cache-ram -1: no byte limit; the token limit still holds
    for i in range(4):
        fill(kv, 0, 20, seed=i)
        cache.save(kv, 0, [100 * (i + 1) + t for t in range(20)])
        cache.update()
    assert cache.limit_size == 0 and cache.n_tokens() == 40 and cache.states[0].tokens[0] == 300


def test_a_longer_prompt_replaces_its_cached_prefix() -> None:
    kv = make_kv(n_seq=1)
    cache = PromptCache(100, 0)
    fill(kv, 0, 10, seed=3)
    cache.save(kv, 0, list(range(10)))
    fill(kv, 0, 30, seed=3)
    assert cache.save(kv, 0, list(range(30)))
    assert [len(s.tokens) for s in cache.states] == [30]


@pytest.mark.parametrize("kind", ["f32", "q8_0"])
def test_other_cache_types_round_trip(kind: str) -> None:
    kv = make_kv(kind=kind)
    fill(kv, 0, 32, seed=4)
    ks, _ = kv.seq_state(0)
    cache = PromptCache(100, 0)
    assert cache.save(kv, 0, list(range(32)))
    assert cache.load(kv, 1, [], list(range(40))) is not None
    np.testing.assert_allclose(kv.seq_state(1)[0][0], ks[0], rtol=0, atol=1e-6 if kind == "f32" else 2e-2)
