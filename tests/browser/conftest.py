"""A real pyllama-server on 127.0.0.1 and headless Debian Chromium driven by Playwright.

The server runs with `--path SITE`, where SITE holds the web UI (links to web/ files, but
not completion.js: the server must fall back to its bundled one, as the README promises for
custom front ends) and the SmolLM2 file at /models/. The offline Pyodide assembled by
wasm/build.py is served by the server's own /wasm/ route, so the in-browser engine loads
everything from the same origin with no network access. Playwright
never downloads a browser: it launches /usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.wasm.tools import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, build_dist, unavailable

SERVER_N_PREDICT = 40  # -n: caps every request, including /completion.js's default n_predict of 500


@dataclass
class Server:
    url: str
    model_url: str  # the GGUF as served by the server itself
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_cmd() -> list[str]:
    script = Path(sys.executable).with_name("pyllama-server")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from asgi.main import main; sys.exit(main())"]


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    dist = build_dist()
    root = tmp_path_factory.mktemp("site")
    # Not symlinks: the static route refuses paths that resolve outside its folder.
    assert dist.is_dir()
    for f in (REPO / "web").iterdir():
        if f.is_file() and f.name != "completion.js":
            shutil.copyfile(f, root / f.name)  # copies: a write in SITE must never reach web/
        elif f.is_dir() and f.name == "vendor":
            shutil.copytree(f, root / f.name)  # markdown-it, DOMPurify, KaTeX (make web-vendor)
    (root / "models").mkdir()
    _link(smollm2_path, root / "models" / smollm2_path.name)
    return root


def _link(src: Path, dst: Path) -> None:
    """A hard link for the big model file (copy across filesystems)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@contextmanager
def run_server(site: Path, model: Path, port: int, extra: list[str], log: Path,
               prefix: str = "") -> Iterator[tuple[Server, Any]]:
    """A pyllama-server process on 127.0.0.1:`port` serving `site`; yields (Server, Popen).
    `prefix`: the server runs with `--api-prefix PREFIX`, and Server.url ends with it."""
    if prefix:
        extra = [*extra, "--api-prefix", prefix]
    args = ["-m", str(model), "--host", "127.0.0.1", "--port", str(port), "--path", str(site), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    with log.open("w") as logf:
        proc = subprocess.Popen([*_server_cmd(), *args], stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        url = f"http://127.0.0.1:{port}{prefix}"
        try:
            deadline = time.time() + 120
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"pyllama-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    pytest.fail(f"pyllama-server not healthy after 120 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
            yield Server(url, f"{url}/models/{model.name}", log), proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="package")
def server(site: Path, smollm2_path: Path) -> Iterator[Server]:
    ARTIFACTS.mkdir(exist_ok=True)
    extra = ["-c", "2048", "-np", "1", "-n", str(SERVER_N_PREDICT)]
    with run_server(site, smollm2_path, _free_port(), extra, ARTIFACTS / "browser-server.log") as (srv, _):
        yield srv


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the `playwright` Python package is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class PageLog:
    """Console messages and page errors, so a failing test shows what the page saw."""

    def __init__(self, page: Any) -> None:
        self.lines: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.lines.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def dump(self) -> str:
        return "\n".join(self.lines[-40:] + [f"[pageerror] {e}" for e in self.errors])


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, PageLog]]:
    ctx = browser.new_context(viewport={"width": 1100, "height": 760})
    pg = ctx.new_page()
    log = PageLog(pg)
    yield pg, log
    ctx.close()
