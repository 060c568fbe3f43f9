"""Control vectors on a real server: started with llama-server's flags on SmolLM2 (exact
numerics), /completion and the OpenAI client answer with the steered text of
tests/golden/control_vector.json (llama-server's own output with the same vector); bad
values and files exit 1 with one line before any server starts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from asgi.main import main
from tests.parity.control_vector_file import write_control_vector, write_parity_vector
from tests.server.conftest import ServerProcess, start

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "control_vector.json").read_text())


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cvec") / "parity-cvec.gguf"
    assert write_parity_vector(path) == GOLDEN["control_vector"]["sha256"]
    return path


@pytest.fixture(scope="module")
def server(smollm2_path: Path, vector_file: Path) -> Iterator[ServerProcess]:
    cv = GOLDEN["control_vector"]
    yield from start(["-m", str(smollm2_path), "-c", "512", "-np", "1", "--numerics", "exact",
                      "--control-vector-scaled", f"{vector_file}:{cv['scale']}",
                      "--control-vector-layer-range", *map(str, cv["layer_range"])], "cvec")


def test_server_answers_with_the_steered_tokens(server: ServerProcess) -> None:
    first, second = GOLDEN["completions"]
    with server.client() as c:
        r = c.post("/completion", json={"prompt": first["prompt"], "n_predict": len(first["tokens"]),
                                        "temperature": 0, "return_tokens": True, "cache_prompt": False})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == first["tokens"] and r.json()["content"] == first["content"]
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x")
    out = client.completions.create(model="x", prompt=second["prompt"], max_tokens=len(second["tokens"]),
                                    temperature=0)
    assert out.choices[0].text == second["content"]


def exit_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyllama-server: error: "), err
    return err[0]


def test_bad_values_exit_1_with_one_line(smollm2_path: Path, vector_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    m = ["-m", str(smollm2_path)]
    narrow = write_control_vector(tmp_path / "narrow.gguf", {"direction.1": np.ones(8, np.float32)})
    cases: list[tuple[list[str], str]] = [
        (["--control-vector-scaled", f"{vector_file}"], "control-vector-scaled format: FNAME:SCALE"),
        (["--control-vector-scaled", f"{vector_file}:1:2"], "control-vector-scaled format: FNAME:SCALE"),
        (["--control-vector-scaled", f"{vector_file}:much"], "SCALE must be a number"),
        (["--control-vector", str(vector_file), "--control-vector-layer-range", "a", "3"],
         "START and END must be integers"),
        (["--control-vector", str(smollm2_path)], "invalid/unparsable direction tensor layer index"),
        (["--control-vector", str(tmp_path / "missing.gguf")], "failed to load control vector file"),
        (["--control-vector", str(narrow)], "does not match the model's (576"),
        (["--control-vector", f"{vector_file},{narrow}"], "not the 576 of the previous files"),
    ]
    for flags, message in cases:
        assert message in exit_line([*m, *flags], capsys), flags


def test_flags_parse_as_llama_server(smollm2_path: Path, vector_file: Path) -> None:
    """Both flags repeat and take CSV lists, summed in command-line order; START > END is accepted."""
    from asgi.settings import parse_settings

    s = parse_settings(["-m", str(smollm2_path), "--control-vector-scaled", f"{vector_file}:0.5,{vector_file}:-2",
                        "--control-vector", str(vector_file), "--control-vector-scaled", f"{vector_file}:3",
                        "--control-vector-layer-range", "9", "4"], {})
    spec: Any = s.models[0].control_vector
    assert [scale for _, scale in spec.files] == [0.5, -2.0, 1.0, 3.0]
    assert (spec.start, spec.end) == (9, 4)


def test_router_mode_checks_the_width_at_each_load(smollm2_path: Path, tmp_path: Path) -> None:
    """Router mode: the file is checked at start, its width only when a model loads (a child
    llama-server of another width fails alone); every model gets the vectors."""
    from asgi.settings import SettingsError, parse_settings

    models = tmp_path / "models"
    models.mkdir()
    (models / "smol.gguf").symlink_to(smollm2_path)
    narrow = write_control_vector(tmp_path / "narrow.gguf", {"direction.1": np.ones(8, np.float32)})
    s = parse_settings(["--models-dir", str(models), "--control-vector", str(narrow)], {})
    assert s.router and all(m.control_vector.files == [(narrow, 1.0)] for m in s.models)
    with pytest.raises(SettingsError, match="invalid/unparsable direction tensor"):
        parse_settings(["--models-dir", str(models), "--control-vector", str(smollm2_path)], {})
