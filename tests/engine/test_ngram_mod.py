"""ngram-mod (llama.cpp's common/ngram-mod.cpp and its speculative.cpp driver) against
hand-worked sequences: what llama.cpp's code proposes, when it adds tokens, when it wipes
the table. The exactness of speculative output with it is in test_speculative.py."""

from __future__ import annotations

import numpy as np

from pyllama.ngram_mod import EMPTY, TABLE_SIZE, NgramMod, NgramModParams
from pyllama.speculative import SpecParams, Speculator


def test_hash_is_llama_cpps() -> None:
    # res = res*6364136223846793005 + token over the n tokens, in 64-bit size_t, mod 4M
    assert NgramMod(2).idx([1, 2]) == 1408815
    assert NgramMod(3).idx([5, 6, 7, 99]) == 1007778  # only the first n tokens count


def test_vectorized_add_is_sequential_add() -> None:
    """A tiny table forces collisions: the last add into a slot wins, `used` counts slots."""
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(0, 50, 200)]
    fast = NgramMod(3, size=7)
    fast.add_range(tokens, 5, 150)
    slow = [EMPTY] * 7
    for i in range(5, 150):
        slow[fast.idx(tokens[i : i + 3])] = tokens[i + 3]
    assert fast.entries.tolist() == slow
    assert fast.used == sum(e != EMPTY for e in slow)


def test_begin_and_chained_draft() -> None:
    mod = NgramMod(2)
    prompt = [1, 2, 3, 4, 1, 2, 5, 6]
    mod.begin(0, prompt)
    # keys (1,2)->3 (2,3)->4 (3,4)->1 (4,1)->2 (1,2)->5 (overwrites) (2,5)->6; (5,6) has no follower
    assert mod.used == 5 and mod.seqs[0].i_last == 6
    assert mod.get([1, 2]) == 5 and mod.get([5, 6]) == EMPTY
    p = NgramModParams(n_match=2, n_max=8, n_min=0)
    # key (3, sampled 4) -> 1, then (4,1) -> 2, (1,2) -> 5, (2,5) -> 6, (5,6) breaks the chain
    assert mod.draft(0, [9, 3], 4, p) == [1, 2, 5, 6]
    assert mod.seqs[0].n_draft_last == 4
    assert mod.draft(0, [9, 3], 4, NgramModParams(2, n_max=2, n_min=0)) == [1, 2]
    assert mod.draft(0, [9, 3], 4, NgramModParams(2, n_max=8, n_min=5)) == []  # chain broke before n_min
    assert mod.seqs[0].n_draft_last == 0
    assert mod.draft(0, [9, 3], 4, NgramModParams(2, n_max=8, n_min=4)) == [1, 2, 5, 6]
    assert mod.draft(0, [9, 7], 8, p) == []  # (7,8) never seen
    assert mod.draft(0, [], 8, p) == []  # fewer than n tokens of context


def test_generated_tokens_added_in_chunks_of_32() -> None:
    mod = NgramMod(2)
    mod.begin(0, [7, 7])  # too short to hold a key and its follower: nothing added, i_last 0
    assert mod.used == 0 and mod.seqs[0].i_last == 0
    p = NgramModParams(2, n_max=4, n_min=0)
    ctx = list(range(100, 132))  # 32 tokens: 0 + 32 < 32 is false, nothing added yet
    assert mod.draft(0, ctx, 50, p) == [] and mod.used == 0
    ctx.append(132)  # 33 tokens: keys starting at 0..30 go in
    mod.draft(0, ctx, 50, p)
    assert mod.used == 31 and mod.seqs[0].i_last == 31
    assert mod.get([100, 101]) == 102 and mod.get([130, 131]) == 132 and mod.get([131, 132]) == EMPTY


def test_low_acceptance_streak_wipes_the_table() -> None:
    mod = NgramMod(2)
    mod.begin(0, [1, 2, 3, 4, 1, 2, 5, 6])
    p = NgramModParams(2, n_max=8, n_min=0)
    for _ in range(4):
        assert mod.draft(0, [9, 3], 4, p) == [1, 2, 5, 6]
        mod.accept(0, 0)  # 0/4 < 0.25
    assert mod.seqs[0].n_low == 4 and mod.used == 5
    mod.draft(0, [9, 3], 4, p)
    mod.accept(0, 1)  # 1/4 is not low: the streak restarts
    assert mod.seqs[0].n_low == 0
    for _ in range(5):
        mod.draft(0, [9, 3], 4, p)
        mod.accept(0, 0)
    assert mod.used == 0 and mod.seqs[0].i_last == 0 and mod.seqs[0].n_low == 0
    assert mod.draft(0, [9, 3], 4, p) == []  # the table is empty now
    mod.accept(0, 0)  # the last draft was empty: nothing to judge
    assert mod.seqs[0].n_low == 0


def test_quarter_full_table_is_wiped_at_begin() -> None:
    rng = np.random.default_rng(1)
    mod = NgramMod(2)
    mod.begin(0, [int(t) for t in rng.integers(0, 50_000, 1_000)])
    assert mod.used > 900
    mod.begin(1, [int(t) for t in rng.integers(0, 50_000, 1_500_000)])  # > TABLE_SIZE/4 slots
    assert mod.used == 0 and int(np.count_nonzero(mod.entries != EMPTY)) == 0
    assert TABLE_SIZE == 4 * 1024 * 1024


def test_speculator_shares_the_table_and_routes_acceptance() -> None:
    """One table for every slot and across tasks; only the type that drafted hears back."""
    spec = Speculator()
    p = SpecParams(types=("ngram-simple", "ngram-mod"), ngram_mod=NgramModParams(2, n_max=8, n_min=0))
    spec.begin(0, [1, 2, 3, 4, 1, 2, 5, 6], p)
    assert spec.draft(1, [9, 3], 4, p, 3) == [1, 2, 5]  # slot 1 reads what slot 0's prompt added; cut to 3
    assert spec._mod is not None and spec._mod.seqs[1].n_draft_last == 4  # before the cut, as llama.cpp
    spec.accepted(1, 0)
    assert spec._mod.seqs[1].n_low == 1
    spec.begin(0, [5, 5], SpecParams())  # a task without ngram-mod leaves the table alone
    assert spec._mod.used == 5
