"""Real servers for the server tests: `python -m asgi.main` (Hypercorn) on 127.0.0.1, free ports.

Each fixture starts one server process with SmolLM2 and stops it at the end of the
session; clients talk to it over real sockets (httpx, the openai package, curl).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-key-1234"


_next_port = 0


def free_port() -> int:
    """A free port: the OS's choice, or the next free one in PYLLAMA_TEST_PORTS ("9020-9099")
    when several people share a machine and each keeps to a range."""
    global _next_port
    ports = os.environ.get("PYLLAMA_TEST_PORTS", "")
    if "-" in ports:
        lo, hi = (int(x) for x in ports.split("-", 1))
        for _ in range(hi - lo + 1):
            port = lo + _next_port % (hi - lo + 1)
            _next_port += 1
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port in PYLLAMA_TEST_PORTS={ports}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, log_name: str = "server",
                 command: list[str] | None = None, scheme: str = "http") -> None:
        self.port = free_port()
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("PYTEST_SERVER_LOG_DIR", "/tmp")) / f"pyllama-{log_name}-{self.port}.log"
        self._log = self.log_path.open("w")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_ARG_", "LLAMA_API_KEY"))}
        full_env = {**inherited, **(env or {})}
        if command is None:
            command = [sys.executable, "-m", "asgi.main", "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            command = [c.replace("{port}", str(self.port)) for c in command]
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
        )

    def wait_ready(self, timeout: float = 120.0, path: str = "/health") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                status = httpx.get(self.base_url + path, timeout=2, verify=False).status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                return
            if status == 500:  # the model failed to load: no point waiting
                raise RuntimeError(f"server reports an error: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=120, **kwargs)


def start(args: list[str], name: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(args, env, name)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The main test server: SmolLM2, 2 slots, embeddings, metrics, slot saving."""
    slots_dir = tmp_path_factory.mktemp("slots")
    yield from start(
        ["-m", str(smollm2_path), "-c", "4096", "-np", "2", "--embeddings", "--metrics",
         "--slot-save-path", str(slots_dir), "-a", "smollm2"],
        "main",
    )


@pytest.fixture(scope="session")
def keyed_server(smollm2_path: Path) -> Iterator[ServerProcess]:
    """A server that requires an API key (given through the environment, as LLAMA_API_KEY)."""
    yield from start(["-m", str(smollm2_path), "-c", "1024", "--no-slots", "--props"], "keyed", {"LLAMA_API_KEY": API_KEY})


@pytest.fixture(scope="session")
def multi_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """--config-file with two aliases of SmolLM2 (llama-cpp-python's config format)."""
    folder = tmp_path_factory.mktemp("multi")
    config = folder / "config.json"
    config.write_text(json.dumps({
        "host": "127.0.0.1",
        "models": [
            {"model": str(smollm2_path), "model_alias": "smol-chatml", "chat_format": "chatml", "n_ctx": 1024},
            {"model": str(smollm2_path), "model_alias": "smol-llama2", "chat_format": "llama-2", "n_ctx": 512,
             "n_gpu_layers": -1},
        ],
    }))
    static = folder / "site"
    static.mkdir()
    (static / "index.html").write_text("<html><body>custom front end</body></html>")
    yield from start(["--config-file", str(config), "--models-max", "1", "--path", str(static)], "multi")


def sse_events(response: httpx.Response) -> list[Any]:
    """Parse an SSE body: a list of decoded `data:` payloads ("[DONE]" kept as the string)."""
    events: list[Any] = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
