"""The assembled chain: greedy, seeds, parameter names, probabilities, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pyllama.errors import InvalidRequestError
from pyllama.sampling import DEFAULT_SAMPLERS, Sampler, SamplingParams, parse_samplers, samplers_to_letters
from pyllama.sampling.rng import MT19937

N_VOCAB = 49152


def logits_row(seed: int = 0, n: int = N_VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, n).astype(np.float32)


def test_mt19937_matches_std() -> None:
    rng = MT19937(5489)  # std::mt19937's default seed: its 10000th output is specified
    for _ in range(9999):
        rng.next_u32()
    assert rng.next_u32() == 4123659995


def test_parse_samplers_names_aliases_and_letters() -> None:
    assert parse_samplers("edskypmxt") == list(DEFAULT_SAMPLERS)
    assert samplers_to_letters(list(DEFAULT_SAMPLERS)) == "edskypmxt"
    assert parse_samplers(["Top-K", "nucleus", "temp", "typ", "minp", "top_n_sigma"]) == [
        "top_k", "top_p", "temperature", "typ_p", "min_p", "top_n_sigma",
    ]  # fmt: skip
    assert parse_samplers("penalties;dry;top_k") == ["penalties", "dry", "top_k"]
    assert parse_samplers("top_k") == ["top_k"]
    assert parse_samplers(["top_k", "tfs_z", "typical_p"]) == ["top_k", "typ_p"]  # old docs' names
    assert parse_samplers("kfypmt") == ["top_k", "typ_p", "top_p", "min_p", "temperature"]


@pytest.mark.parametrize("bad", [["top_k", "bogus"], "kzq", ["top_k", 3]])
def test_parse_samplers_rejects_unknown(bad: object) -> None:
    with pytest.raises(InvalidRequestError):
        parse_samplers(bad)  # type: ignore[arg-type]


def test_greedy_picks_argmax_lowest_id_on_ties() -> None:
    row = logits_row(1)
    s = Sampler(SamplingParams(temperature=0.0), N_VOCAB)
    assert s.sample(row) == int(np.argmax(row))
    row[100] = row[7] = row.max() + 1.0
    assert s.sample(row) == 7
    # also when top_k is off (no sort: the first maximum in id order)
    s2 = Sampler(SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0), N_VOCAB)
    assert s2.sample(row) == 7


def test_seed_reproduces_and_differs() -> None:
    rows = [logits_row(i) * 0.3 for i in range(20)]

    def run(seed: int) -> tuple[list[int], int]:
        s = Sampler(SamplingParams(seed=seed, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0), N_VOCAB)
        out = []
        for r in rows:
            t = s.sample(r)
            s.accept(t)
            out.append(t)
        return out, s.seed

    a, seed_a = run(42)
    b, _ = run(42)
    c, _ = run(43)
    assert seed_a == 42 and a == b and a != c
    rnd, drawn = run(-1)
    assert 0 <= drawn < 2**32 - 1
    assert run(drawn)[0] == rnd  # the reported seed reproduces a "random" run


def test_reset_restarts_rng() -> None:
    s = Sampler(SamplingParams(seed=7, temperature=2.0), N_VOCAB)
    rows = [logits_row(i) * 0.2 for i in range(5)]
    first = [s.sample(r) for r in rows]
    s.reset()
    assert [s.sample(r) for r in rows] == first


def test_distribution_follows_softmax() -> None:
    """With every truncation off, draws follow softmax(logits / T) (chi-square-ish check)."""
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    s = Sampler(SamplingParams(seed=1, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0), 4)
    counts = np.bincount([s.sample(logits) for _ in range(4000)], minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_logit_bias_ban_and_ignore_eos() -> None:
    row = logits_row(2)
    best = int(np.argmax(row))
    s = Sampler(SamplingParams(temperature=0.0, logit_bias=[(best, float("-inf"))]), N_VOCAB)
    assert s.sample(row) != best
    s = Sampler(SamplingParams(temperature=0.0, ignore_eos=True), N_VOCAB, eog_ids=frozenset({best}))
    assert s.sample(row) != best
    s = Sampler(SamplingParams(temperature=0.0, logit_bias=[(5, 100.0), (N_VOCAB + 5, 1.0)]), N_VOCAB)
    assert s.sample(row) == 5


def test_repeat_penalty_via_accept_changes_greedy_choice() -> None:
    row = np.zeros(10, dtype=np.float32)
    row[3], row[4] = 2.0, 1.9
    s = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.5), 10)
    assert s.sample(row) == 3
    s.accept_prompt([3])
    assert s.sample(row) == 4
    s.reset()
    assert s.sample(row) == 3


def test_repeat_last_n_minus_one_means_context() -> None:
    s = Sampler(SamplingParams(repeat_penalty=1.1, repeat_last_n=-1), 10, n_ctx=123)
    pen = next(st for st in s._stages if st.name == "penalties")
    assert pen.last_n == 123  # type: ignore[attr-defined]


def test_chain_names_follow_samplers_and_mirostat() -> None:
    s = Sampler(SamplingParams(samplers=parse_samplers("kt")), 10)
    assert s.chain_names == ["top-k", "temp-ext", "dist"]
    assert Sampler(SamplingParams(mirostat=2), 10).chain_names == ["temp", "mirostat-v2"]
    assert Sampler(SamplingParams(mirostat=1), 10).chain_names == ["temp", "mirostat"]


@pytest.mark.parametrize("mirostat", [1, 2])
def test_mirostat_samples_and_adapts(mirostat: int) -> None:
    s = Sampler(SamplingParams(mirostat=mirostat, seed=3, mirostat_tau=3.0), N_VOCAB)
    stage = s._stages[-1]
    mu0 = float(stage.mu)  # type: ignore[attr-defined]
    for i in range(5):
        t = s.sample(logits_row(i))
        assert 0 <= t < N_VOCAB
        s.accept(t)
    assert float(stage.mu) != mu0  # type: ignore[attr-defined]


def test_probs_and_post_sampling_probs() -> None:
    row = logits_row(3)
    s = Sampler(SamplingParams(seed=0, top_k=5), N_VOCAB)
    top = s.probs(row, 3)
    p = np.exp(row - row.max())
    p /= p.sum()
    order = np.argsort(-row)[:3]
    assert [t for t, _ in top] == order.tolist()
    np.testing.assert_allclose([q for _, q in top], p[order], rtol=1e-5)
    tok = s.sample(row)
    post = s.post_sampling_probs(10)
    assert len(post) <= 5 and abs(sum(q for _, q in post) - 1.0) < 1e-5
    assert tok in [t for t, _ in post]
    assert s.last_token_post_prob() == dict(post)[tok]


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InvalidRequestError, match="repeat_penalty"):
        Sampler(SamplingParams(repeat_penalty=0.0), 10)
    with pytest.raises(InvalidRequestError, match="mirostat"):
        Sampler(SamplingParams(mirostat=3), 10)
    with pytest.raises(InvalidRequestError, match="logits"):
        Sampler(SamplingParams(), 10).sample(np.zeros(11, np.float32))


def test_default_chain_overhead_on_49k_vocab() -> None:
    """The default chain must stay ~1 ms per token on SmolLM2's vocabulary."""
    rows = [logits_row(i) for i in range(4)]
    s = Sampler(SamplingParams(seed=0), N_VOCAB)
    s.sample(rows[0])
    n = 100
    t0 = time.perf_counter()
    for i in range(n):
        s.accept(s.sample(rows[i % 4]))
    per_token = (time.perf_counter() - t0) / n
    print(f"default chain: {per_token * 1e3:.3f} ms/token")
    assert per_token < 5e-3  # generous bound for a loaded 2-core machine


def test_grammar_constrains_sampling_and_rejection_path() -> None:
    """The sampled token is checked first; when rejected the chain reruns on the allowed tokens."""
    pieces = [b"a", b"b", b"{", b"}", b"</s>", b"ab"]
    eog = frozenset({4})
    s = Sampler(SamplingParams(seed=0, grammar='root ::= "{" "ab"* "}"'), len(pieces), eog_ids=eog, token_pieces=pieces)
    row = np.zeros(len(pieces), dtype=np.float32)
    row[4] = 10.0  # the model wants to stop at once: not allowed yet
    out = b""
    for _ in range(12):
        t = s.sample(row)
        if t in eog:
            break
        s.accept(t)
        out += pieces[t]
    assert out.startswith(b"{") and (t in eog) == out.endswith(b"}")
    assert all(c in b"{ab}" for c in out)
    if t in eog:
        assert out[1:-1].replace(b"ab", b"") == b""


def test_grammar_needs_pieces_and_reports_bad_grammar() -> None:
    from pyllama.grammar import GrammarError

    with pytest.raises(InvalidRequestError, match="token pieces"):
        Sampler(SamplingParams(grammar='root ::= "a"'), 3)
    with pytest.raises(GrammarError, match=r"^Failed to parse grammar"):
        Sampler(SamplingParams(grammar='root ::= "a'), 3, token_pieces=[b"a", b"b", b"c"])
