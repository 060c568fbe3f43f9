"""Corrupted models through the CLI and the server: one clear line, never a traceback.

The broken files come from tests/engine/test_gguf_file.py (fourteen kinds, each a tiny
valid llama model with one planted defect), plus two that only show when the model is
used: a token list of the wrong array type, and a tensor whose shape does not fit the
others (the server's warm-up forward pass catches it at load, as llama-server's does).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.engine.test_gguf_file import CORRUPTION_MESSAGES, corrupted_models, gguf_bytes, gguf_parts
from tests.server.conftest import REPO, ServerProcess

SERVER_ONLY = {
    "wrong array type": "tokenizer.ggml.tokens is missing or not an array of strings",
    "wrong tensor shape": "failed its warm-up run",
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("broken-models")
    paths = corrupted_models(folder)
    parts = gguf_parts(folder / "valid.gguf")
    tokens_as_ints = copy.deepcopy(parts)
    tokens_as_ints["kvs"] = [(k, t, np.arange(300, dtype=np.int32) if k == "tokenizer.ggml.tokens" else v)
                             for k, t, v in tokens_as_ints["kvs"]]
    wrong_shape = copy.deepcopy(parts)
    wrong_shape["tensors"][0][1] = [32, 600]  # token_embd: same bytes, shape that fits no other tensor
    for kind, data in (("wrong array type", gguf_bytes(tokens_as_ints)), ("wrong tensor shape", gguf_bytes(wrong_shape))):
        paths[kind] = folder / (kind.replace(" ", "-") + ".gguf")
        paths[kind].write_bytes(data)
    return paths


def test_cli_exits_nonzero_with_one_line(broken: dict[str, Path]) -> None:
    kinds = [*sorted(CORRUPTION_MESSAGES), "wrong array type"]
    procs = {}
    for kind in kinds:  # all at once: each is a short-lived process
        procs[kind] = subprocess.Popen(
            [sys.executable, "-m", "pyllama.cli.main", "run", "-m", str(broken[kind]), "-p", "hi", "-n", "1"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for kind, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (kind, proc.returncode, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (kind, err)
        expected = {**CORRUPTION_MESSAGES, **SERVER_ONLY}[kind]
        assert lines[0].startswith("pyllama run: error: ") and expected in lines[0], (kind, lines[0])
        assert out == "", (kind, out)


@pytest.mark.slow
def test_server_health_reports_the_load_error(broken: dict[str, Path]) -> None:
    expected = {**CORRUPTION_MESSAGES, **SERVER_ONLY}
    pending = sorted(expected)
    while pending:  # a few servers at a time: each is a Python process importing Quart and NumPy
        batch, pending = pending[:6], pending[6:]
        servers = {kind: ServerProcess(["-m", str(broken[kind])], log_name="broken") for kind in batch}
        try:
            for kind, server in servers.items():
                deadline = time.monotonic() + 90
                res = None
                while time.monotonic() < deadline:
                    try:
                        res = httpx.get(server.base_url + "/health", timeout=5)
                        if res.status_code == 500:
                            break
                    except httpx.HTTPError:
                        pass
                    assert server.proc.poll() is None, (kind, server.log_path.read_text()[-1000:])
                    time.sleep(0.2)
                assert res is not None and res.status_code == 500, (kind, res)
                body = res.json()
                assert body["status"] == "error" and expected[kind] in body["error"]["message"], (kind, body)
                assert body["error"]["code"] == 500
                # the completion routes say the same, in the OpenAI error shape
                gen = httpx.post(server.base_url + "/v1/completions", json={"prompt": "hi"}, timeout=10)
                assert gen.status_code == 503 and expected[kind] in gen.json()["error"]["message"], (kind, gen.text)
                log = server.log_path.read_text()
                assert expected[kind] in log and "Traceback" not in log, (kind, log[-2000:])
        finally:
            for server in servers.values():
                server.stop()
