"""Speculative decoding over HTTP: same greedy text with and without drafts, timings.draft_n, /props, /slots."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi.settings import SettingsError, parse_settings
from tests.server.conftest import ServerProcess, start

pytestmark = pytest.mark.server

CODE = (
    "Repeat this code exactly:\n\ndef add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\n"
    "def mul(a, b):\n    return a * b\n\nAnswer:\n\ndef add(a, b):\n"
)


@pytest.fixture(scope="module")
def spec_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    # Fast numerics (exact ones are too slow for a server test on a shared machine): a row's
    # logits differ from alone by ~0.005 at most, far below this prompt's greedy margins;
    # tests/engine/test_speculative.py shows exact numerics are token-identical by construction.
    # -md: SmolLM2 drafts for itself (requests pick it with "speculative.type": "draft-simple").
    yield from start(
        ["-m", str(smollm2_path), "-c", "1024", "-np", "2", "--spec-type", "ngram-simple",
         "--spec-ngram-simple-size-n", "3", "--spec-ngram-simple-size-m", "8", "-md", str(smollm2_path),
         "--spec-draft-n-max", "4", "--spec-type", "ngram-mod", "--metrics"],
        "speculative",
    )


def complete(server: ServerProcess, **extra: Any) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/completion", json={"prompt": CODE, "n_predict": 24, "temperature": 0, "cache_prompt": False,
                                        **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_ngram_same_text_and_draft_counts(spec_server: ServerProcess) -> None:
    spec = complete(spec_server)
    plain = complete(spec_server, **{"speculative.type": "none"})
    assert spec["content"] == plain["content"] and spec["tokens_predicted"] == plain["tokens_predicted"] == 24
    t = spec["timings"]
    assert t["draft_n"] > 0 and 0 < t["draft_n_accepted"] <= t["draft_n"], t
    assert "draft_n" not in plain["timings"]


def test_two_slots_at_once_same_text(spec_server: ServerProcess) -> None:
    alone = complete(spec_server, **{"speculative.type": "none"})["content"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: complete(spec_server), range(2)))
    assert [b["content"] for b in both] == [alone, alone]
    assert all(b["timings"]["draft_n_accepted"] > 0 for b in both)


def test_map_k4v_per_request_same_text(spec_server: ServerProcess) -> None:
    k4v = complete(spec_server, **{"speculative.type": "ngram-map-k4v", "speculative.ngram_size_n": 3,
                                   "speculative.ngram_size_m": 8})
    plain = complete(spec_server, **{"speculative.type": "none"})
    assert k4v["content"] == plain["content"]
    assert k4v["timings"]["draft_n_accepted"] > 0, k4v["timings"]


def test_draft_model_same_text(spec_server: ServerProcess) -> None:
    drafted = complete(spec_server, **{"speculative.type": "draft-simple", "speculative.n_max": 3})
    plain = complete(spec_server, **{"speculative.type": "none"})
    assert drafted["content"] == plain["content"]
    assert drafted["timings"]["draft_n_accepted"] > 0


def test_props_and_slots_report_it(spec_server: ServerProcess) -> None:
    with spec_server.client() as c:
        props = c.get("/props").json()
        slots = c.get("/slots").json()
    settings = props["default_generation_settings"]
    assert settings["speculative"] is True
    assert settings["params"]["speculative.types"] == "ngram-simple,ngram-mod,draft-simple"
    assert settings["params"]["speculative.n_max"] == 4
    assert all(s["speculative"] is True for s in slots)


def test_metrics_count_drafts(spec_server: ServerProcess) -> None:
    complete(spec_server)
    with spec_server.client() as c:
        text = c.get("/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values["llamacpp:spec_decode_num_draft_tokens_total"] >= values["llamacpp:spec_decode_num_accepted_tokens_total"] > 0
    assert values["llamacpp:spec_decode_num_drafts_total"] > 0


@pytest.mark.parametrize("field,value", [("speculative.n_max", -1), ("speculative.p_min", 1.5),
                                         ("speculative.type", "bogus"), ("speculative.ngram_size_n", "3")])
def test_bad_speculative_fields_are_400(spec_server: ServerProcess, field: str, value: Any) -> None:
    with spec_server.client() as c:
        r = c.post("/completion", json={"prompt": "hi", "n_predict": 1, field: value})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]


OPS = (("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/"), ("mod", "%"), ("power", "**"), ("floor_div", "//"),
       ("bit_and", "&"), ("bit_or", "|"), ("bit_xor", "^"), ("shift_left", "<<"), ("shift_right", ">>"),
       ("less", "<"), ("greater", ">"), ("equal", "=="), ("not_equal", "!="), ("at_most", "<="), ("at_least", ">="))
FUNCS = "".join(f"def {name}(a, b):\n    return a {op} b\n\n" for name, op in OPS)  # 270 tokens
LONG = f"Repeat this code exactly:\n\n{FUNCS}Answer:\n\n{FUNCS[: FUNCS.index('def mul')]}"


@pytest.fixture(scope="module")
def default_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    yield from start(["-m", str(smollm2_path), "-c", "1024", "--spec-default"], "speculative-default")


def test_spec_default_drafts_with_ngram_mod(default_server: ServerProcess) -> None:
    """--spec-default: ngram-mod with llama.cpp's sizes (a 24-token key, drafts of 48 to 64
    tokens), so only a long repeat is guessed; here the answer copies an 18-function listing."""
    spec = complete(default_server, prompt=LONG, n_predict=128)
    plain = complete(default_server, prompt=LONG, n_predict=128, **{"speculative.type": "none"})
    assert spec["content"] == plain["content"]
    t = spec["timings"]
    assert t["draft_n"] >= 48 and 0 < t["draft_n_accepted"] <= t["draft_n"], t
    with default_server.client() as c:
        params = c.get("/props").json()["default_generation_settings"]["params"]
    assert params["speculative.types"] == "ngram-mod"


def test_spec_default_sizes(smollm2_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mod = parse_settings(["-m", str(smollm2_path), "--spec-default"], {}).speculative
    assert mod.types == ("ngram-mod",) and (mod.ngram_mod.n_match, mod.ngram_mod.n_min, mod.ngram_mod.n_max) == (24, 48, 64)
    mod = parse_settings(["-m", str(smollm2_path), "--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", "16",
                          "--spec-ngram-mod-n-min", "0", "--spec-ngram-mod-n-max", "8"], {}).speculative
    assert (mod.ngram_mod.n_match, mod.ngram_mod.n_min, mod.ngram_mod.n_max) == (16, 0, 8)
    assert "too small" not in caplog.text
    parse_settings(["-m", str(smollm2_path), "--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", "8"], {})
    assert "ngram_mod n_match=8 is too small" in caplog.text  # llama.cpp's warning
    with pytest.raises(SettingsError, match="n-match"):
        parse_settings(["-m", str(smollm2_path), "--spec-ngram-mod-n-match", "0"], {})


@pytest.fixture(scope="module")
def synth_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    # Synthetic acceptance (llama-server's --spec-synth-rates, benchmarking only): the first two
    # guesses of every 4-token draft are kept, the last two never, whatever the model says.
    yield from start(
        ["-m", str(smollm2_path), "-c", "1024", "-md", str(smollm2_path), "--spec-draft-n-max", "4",
         "--spec-draft-n-min", "4", "--spec-synth-rates", "1,1,0,0"],
        "speculative-synth",
    )


def test_synthetic_acceptance_follows_the_rates(synth_server: ServerProcess) -> None:
    """Self-drafting greedy keeps all 4 guesses when checked (test_draft_model_same_text);
    with rates 1,1,0,0 exactly half of every draft is kept, the same on every run of a seed."""
    runs = [complete(synth_server, temperature=0.2, top_k=5, seed=4242) for _ in range(2)]
    t = runs[0]["timings"]
    assert t["draft_n"] > 0 and t["draft_n"] % 4 == 0 and 2 * t["draft_n_accepted"] == t["draft_n"], t
    assert (runs[1]["timings"]["draft_n"], runs[1]["timings"]["draft_n_accepted"]) == (t["draft_n"], t["draft_n_accepted"])
    assert runs[0]["content"] == runs[1]["content"]


def test_synthetic_acceptance_keeps_limits(synth_server: ServerProcess) -> None:
    """Kept guesses count against n_predict and skip the grammar (llama-server's
    server_sample_and_accept_synth): the request still ends where it should, with a 200."""
    full = complete(synth_server, prompt="Respond with only: OK", n_predict=64, ignore_eos=True)
    assert full["tokens_predicted"] == 64 and full["stop_type"] == "limit"
    grammar = complete(synth_server, n_predict=6, grammar='root ::= "a"{5,5}')
    assert grammar["tokens_predicted"] <= 6


@pytest.mark.parametrize("argv, message", [
    (["--spec-synth-rates", "1,1"], "must contain 4 values, got 2"),
    (["--spec-synth-rates", "0.5,1,0,0"], "monotonically non-increasing"),
    (["--spec-synth-rates", "1,1,x,0"], "--spec-synth-rates"),
    (["--spec-synth-len", "6"], "within [1, 5]"),
    (["--spec-synth-len", "2", "--spec-synth-rates", "1,1,0,0"], "mutually exclusive"),
])
def test_bad_synthetic_rates_refused(smollm2_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        parse_settings(["-m", str(smollm2_path), "-md", str(smollm2_path), "--spec-draft-n-max", "4", *argv], {})
    with pytest.raises(SettingsError, match="requires an initialized speculative decoding context"):
        parse_settings(["-m", str(smollm2_path), "--spec-synth-len", "2"], {})
