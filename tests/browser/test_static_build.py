"""`make web-static`'s folder on a plain static host, with no pyllama server at all.

tools/web_static.py writes the page, the offline Pyodide, the wheels and SmolLM2 into one
folder; `python -m http.server` serves it. Chromium may reach that server and nothing else
(every other request is aborted, so the CDN default cannot be used by accident). First
visit: the model downloads from models/ and the page answers. Second visit in the same
browser profile, with models/ blocked too: the model comes from Cache Storage (listed
with its size), and the greedy completion equals `pyllama run --temp 0` on the same
prompt. The cached model can then be deleted. Times from page open to the first token
(cold and from the cache) go to test-artifacts/web-static-timing.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import PageLog
from tests.wasm.tools import ARTIFACTS, REPO, build_dist

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PORT = 8861
PROMPT = "The capital of France is"
N_PREDICT = 12
SETTINGS = """
localStorage.setItem("pyllama.settings.v1", JSON.stringify(
  Object.assign(JSON.parse(localStorage.getItem("pyllama.settings.v1") || "{}"),
                {temperature: 0, seed: 42, n_predict: %d, mode: "completion"})));
window.__t0 = performance.timeOrigin;
window.__first = 0;
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const g = document.querySelector("#completion-output .gen");
    if (!window.__first && g && g.textContent.length) window.__first = performance.now();
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
});
""" % N_PREDICT  # noqa: UP031


@pytest.fixture(scope="module")
def static_site(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[str]:
    build_dist()
    out = tmp_path_factory.mktemp("static") / "site"
    res = subprocess.run([sys.executable, str(REPO / "tools" / "web_static.py"), "--out", str(out),
                          "--model", str(smollm2_path)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "README.md").read_text().count("http.server") >= 1
    assert (out / "wasm" / "pyodide.asm.wasm").is_file() and (out / "vendor" / "katex" / "katex.min.js").is_file()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(PORT), "--bind", "127.0.0.1", "--directory", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{PORT}/"
    try:
        for _ in range(100):
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def pyllama_run(model: Path) -> str:
    exe = Path(sys.executable).with_name("pyllama")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pyllama"]
    res = subprocess.run([*cmd, "run", "-m", str(model), "-p", PROMPT, "-n", str(N_PREDICT), "--temp", "0",
                          "--numerics", "fast", "--weights", "dense"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.removesuffix("\n")  # the CLI ends its output with a newline, as llama-cli does


def visit(ctx: Any, url: str) -> tuple[Any, PageLog]:
    pg = ctx.new_page()
    log = PageLog(pg)
    pg.add_init_script(SETTINGS)
    pg.goto(url)
    # the engine is chosen after the stored conversations are read (asynchronous)
    pg.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)
    return pg, log


def load_and_complete(pg: Any, log: PageLog) -> tuple[str, str]:
    pg.wait_for_function("document.querySelector('#gguf-url').value.includes('models/')", timeout=10_000)
    pg.click("#gguf-load")
    pg.wait_for_selector('#load-status[data-state="ready"], #load-status[data-state="error"]', timeout=300_000)
    status = pg.inner_text("#load-status")
    assert "Model ready" in status, status + "\n" + log.dump()
    pg.fill("#completion-input", PROMPT)
    pg.click("#complete")
    pg.wait_for_selector('#completion-output[data-done="1"]', timeout=300_000)
    return pg.evaluate("document.querySelector('#completion-output .gen').textContent"), status


def test_static_build_runs_from_cache_with_no_server(browser: Any, static_site: str, smollm2_path: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1100, "height": 760})
    outside: list[str] = []
    models_blocked = [False]

    def gate(route: Any) -> None:
        u = route.request.url
        if not u.startswith(static_site) or (models_blocked[0] and "/models/" in u):
            outside.append(u)
            route.abort()
        else:
            route.continue_()

    ctx.route("**/*", gate)
    try:
        pg, log = visit(ctx, static_site)
        pg.wait_for_function("document.querySelector('#engine-select').value === 'browser'", timeout=30_000)
        cold_text, _ = load_and_complete(pg, log)
        cold_first = pg.evaluate("window.__first") / 1000
        assert cold_text.strip(), log.dump()
        pg.close()

        models_blocked[0] = True  # the second visit must not touch the network for the model
        pg, log = visit(ctx, static_site)
        pg.wait_for_selector("#cached-models .cached-load", timeout=10_000)
        listed = pg.inner_text("#cached-models")
        assert smollm2_path.name in listed and "93.8 MiB" in listed, listed
        warm_text, status = load_and_complete(pg, log)
        warm_first = pg.evaluate("window.__first") / 1000
        assert "from the browser's cache" in status
        expected = pyllama_run(smollm2_path)
        assert warm_text == expected, f"browser {warm_text!r} vs pyllama run {expected!r}"
        assert cold_text == warm_text
        assert not [u for u in outside if "/models/" not in u], outside  # only our own block
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "web-static-completion.png"))

        # the kept model can be deleted
        pg.click("#cached-models .cached-del")
        pg.wait_for_function("!document.querySelector('#cached-models .cached-load')", timeout=10_000)
        assert not log.errors, log.dump()
        timing = {"first_token_s_cold": round(cold_first, 1), "first_token_s_cached": round(warm_first, 1),
                  "load": os.getloadavg()[0]}  # fmt: skip
        (ARTIFACTS / "web-static-timing.json").write_text(json.dumps(timing, indent=1) + "\n")
        print(f"\nstatic build: page open -> first token {cold_first:.1f} s cold, {warm_first:.1f} s from cache")
    finally:
        ctx.close()
