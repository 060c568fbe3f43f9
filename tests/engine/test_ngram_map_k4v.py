"""ngram-map-k4v (llama.cpp's common_ngram_map_draft with key_only false) on hand-worked
sequences: follower statistics, the dominance rule, min_hits, acceptance feedback."""

from __future__ import annotations

from pyllama.ngram_map_k4v import K4vState, k4v_accepted, k4v_draft


def test_single_follower_is_drafted_and_recounted() -> None:
    state = K4vState()
    tokens = [9, 1, 2, 3, 4, 0, 0, 0, 1]
    assert k4v_draft(tokens, 2, 2, 2, 1, state) == [3, 4]  # key (1, 2) at 1, followed by 3 4
    stats = state.keys[(1, 2)]
    assert (stats.key_num, stats.stat_idx, stats.values[0].idx, stats.values[0].num) == (1, 1, 3, 1)
    assert k4v_draft(tokens, 2, 2, 2, 1, state) == [3, 4]
    assert stats.values[0].num == 2  # llama.cpp counts from stat_idx inclusive: the match again
    k4v_accepted(state, 1)  # the next draft of this follower is as long as this acceptance
    assert stats.values[0].n_accepted == 1 and state.last is None
    assert k4v_draft(tokens, 2, 2, 2, 1, state) == [3]
    assert k4v_draft(tokens, 7, 2, 2, 1, state) == [] and state.last is None  # (1, 7) never seen
    assert k4v_draft(tokens[:5], 2, 2, 2, 1, state) == []  # shorter than 2n + m


def test_disagreeing_followers_are_not_drafted() -> None:
    tokens = [9, 1, 2, 3, 4, 1, 2, 5, 6, 0, 0, 0, 1]
    state = K4vState()
    assert k4v_draft(tokens, 2, 2, 2, 1, state) == []  # 3 4 once, 5 6 once: 1 < 2 * 1
    assert [v.num for v in state.keys[(1, 2)].values] == [1, 1, 0, 0]


def test_dominant_follower_drafts_after_the_latest_occurrence() -> None:
    tokens = [9, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 5, 6, 0, 0, 0, 1]
    state = K4vState()
    # 3 4 twice, 5 6 once: 2 >= 2 * 1, so draft -- the tokens after the latest occurrence (5 6),
    # as llama.cpp, whatever follower won the vote
    assert k4v_draft(tokens, 2, 2, 2, 1, state) == [5, 6]
    assert state.last == ((1, 2), 0)
    # the next lookup counts the latest occurrence again (from stat_idx inclusive): a 2-2 tie
    assert k4v_draft(tokens, 2, 2, 2, 1, state) == []
    assert [v.num for v in state.keys[(1, 2)].values] == [2, 2, 0, 0]


def test_min_hits() -> None:
    tokens = [9, 1, 2, 3, 4, 0, 0, 0, 1]
    state = K4vState()
    assert k4v_draft(tokens, 2, 2, 2, 2, state) == []  # the first lookup of the key is one hit
    assert k4v_draft(tokens, 2, 2, 2, 2, state) == [3, 4]
