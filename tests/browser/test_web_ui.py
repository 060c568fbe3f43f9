"""The web UI in headless Chromium against a real pyllama-server, in both engine modes.

Server mode: a chat message streams in over SSE (the page is seen with partial text before
the end), the answer equals the server's own non-streamed greedy answer, and regenerate /
edit / a follow-up turn / reload work. In-browser mode: Pyodide boots in a Web Worker from the server's /wasm/, the
SmolLM2 file is downloaded from the same server into the wasm heap, and the worker's
streamed greedy answer starts as the server's does (same engine, template and tokens);
Stop ends a long generation at once. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import PageLog, Server, _free_port, run_server
from tests.wasm.tools import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "What is the capital of France?"
N_PREDICT = 24

# Greedy sampling so both engines must produce the same text; set before the app starts.
INIT_SCRIPT = """
if (!localStorage.getItem("pyllama.settings.v1")) {
  localStorage.setItem("pyllama.settings.v1", JSON.stringify({
    temperature: 0, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, seed: 42, n_predict: %d }));
}
window.__partials = [];
window.__loadStatus = [];
document.addEventListener("DOMContentLoaded", () => {
  const st = document.querySelector("#load-status");
  new MutationObserver(() => window.__loadStatus.push(st.textContent)).observe(st, { childList: true, characterData: true, subtree: true });
  new MutationObserver(() => {
    const el = document.querySelector('.msg.assistant[data-done="0"] .msg-body');
    if (!el) return;
    const n = el.textContent.length;
    if (n && window.__partials[window.__partials.length - 1] !== n) window.__partials.push(n);
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
});
""" % N_PREDICT  # noqa: UP031


def server_answer(server: Server, question: str) -> str:
    """The server's greedy answer, evaluating the whole prompt (no reuse of the slot's cache:
    the engine's float rounding depends on how many rows a matmul has, so a reused prefix can
    change a near-tie; the UI's first question is also evaluated from scratch)."""
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": question}], "temperature": 0, "seed": 42,
              "max_tokens": N_PREDICT, "cache_prompt": False},
        timeout=120,
    )  # fmt: skip
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


def last_assistant(pg: Any) -> dict[str, Any]:
    result: dict[str, Any] = pg.evaluate(
        "(() => { const c = window.pyllamaUI.conversations.find((x) => x.id === window.pyllamaUI.currentId);"
        " return c.messages[c.messages.length - 1]; })()"
    )
    return result


def send(pg: Any, text: str, timeout_ms: int) -> dict[str, Any]:
    n_before = pg.locator('.msg.assistant[data-done="1"]').count()
    pg.evaluate("window.__partials = []")
    pg.fill("#input", text)
    pg.press("#input", "Enter")
    pg.wait_for_function(
        f"document.querySelectorAll('.msg.assistant[data-done=\"1\"]').length > {n_before} "
        "&& !document.querySelector('.msg.assistant[data-done=\"0\"]')",
        timeout=timeout_ms,
    )
    return last_assistant(pg)


def test_server_mode_streams_chat(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.add_init_script(INIT_SCRIPT)
    pg.goto(server.url + "/?engine=server")
    pg.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
    assert "SmolLM2" in pg.get_attribute("#model-info", "title") or "smollm" in pg.inner_text("#model-info").lower()

    msg = send(pg, QUESTION, 120_000)
    expected = server_answer(server, QUESTION)
    assert msg["content"] == expected, log.dump()
    assert expected.strip()
    partials = pg.evaluate("window.__partials")
    assert len(partials) >= 3, f"answer was not streamed: {partials}"
    assert "tok/s" in pg.inner_text(".msg.assistant .msg-foot")
    assert pg.inner_text(".msg.assistant .msg-body").strip()
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "web-server-chat.png"))

    # regenerate: greedy, so the same answer again, replacing (not adding) the reply
    pg.click(".msg.assistant .actions button:has-text('regenerate')")
    pg.wait_for_function("!document.querySelector('.msg.assistant[data-done=\"0\"]') && "
                         "document.querySelectorAll('.msg.assistant[data-done=\"1\"]').length === 1", timeout=120_000)
    assert pg.locator(".msg").count() == 2
    regenerated = last_assistant(pg)
    assert regenerated["content"].strip() and not regenerated.get("error")
    assert regenerated["content"][:10] == expected[:10]

    # edit the question: the conversation is cut there and answered again
    pg.click(".msg.user .actions button:has-text('edit')")
    pg.fill(".msg.user textarea.edit-box", "Name a primary color.")
    pg.click(".msg.user button:has-text('Save & send')")
    pg.wait_for_function("document.querySelector('.msg.user .plain')?.textContent === 'Name a primary color.' && "
                         "document.querySelector('.msg.assistant[data-done=\"1\"]')", timeout=120_000)
    assert pg.locator(".msg").count() == 2
    edited = last_assistant(pg)
    assert edited["content"].strip() and not edited.get("error")
    assert edited["content"] != expected

    # a follow-up turn (the server reuses the cached conversation prefix)
    follow = send(pg, "Name another one.", 120_000)
    assert follow["content"].strip() and not follow.get("error"), follow
    assert pg.locator(".msg").count() == 4

    # the conversation survives a reload (localStorage) and is listed in the sidebar
    pg.reload()
    pg.wait_for_selector(".msg.assistant")
    assert pg.locator("#conv-list li").count() == 1
    assert "primary color" in pg.inner_text("#conv-list")
    assert pg.locator(".msg").count() == 4

    pg.set_viewport_size({"width": 390, "height": 844})
    pg.reload()
    pg.wait_for_selector(".msg.assistant")
    assert not pg.is_visible("#new-chat") or pg.evaluate(
        "document.querySelector('#sidebar').getBoundingClientRect().right <= 0"
    ), "on a phone the conversation list is a drawer, closed by default"
    pg.screenshot(path=str(ARTIFACTS / "web-server-chat-phone.png"))
    pg.click("#open-sidebar")
    pg.wait_for_timeout(400)  # the drawer slides in
    assert pg.evaluate("document.querySelector('#sidebar').getBoundingClientRect().left") == 0
    pg.screenshot(path=str(ARTIFACTS / "web-server-chat-phone-drawer.png"))
    assert not log.errors, log.dump()


def test_server_mode_completion_with_probabilities(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.add_init_script(INIT_SCRIPT.replace("n_predict: %d" % N_PREDICT, "n_predict: 12, n_probs: 3"))  # noqa: UP031
    pg.goto(server.url + "/?engine=server")
    pg.click("#tab-completion")
    pg.fill("#completion-input", "The capital of France is")
    pg.click("#complete")
    pg.wait_for_selector('#completion-output[data-done="1"]', timeout=120_000)
    toks = pg.locator("#completion-output .tok")
    assert toks.count() == 12, log.dump()
    r = httpx.post(server.url + "/completion",
                   json={"prompt": "The capital of France is", "n_predict": 12, "temperature": 0, "n_probs": 3},
                   timeout=120).json()  # fmt: skip
    assert pg.inner_text("#completion-output").startswith("The capital of France is")
    assert "".join(toks.all_text_contents()) == r["content"]
    toks.nth(0).hover()
    pg.wait_for_selector("#prob-popup:not([hidden]) tr")
    assert pg.locator("#prob-popup tr").count() == 3
    assert re.search(r"\d+\.\d%", pg.inner_text("#prob-popup"))
    pg.screenshot(path=str(ARTIFACTS / "web-server-completion-probs.png"))
    assert not log.errors, log.dump()


def test_unreachable_server_is_reported(page: tuple[Any, PageLog], server: Server) -> None:
    pg, _ = page
    pg.add_init_script(
        'localStorage.setItem("pyllama.settings.v1", JSON.stringify({server_url: "http://127.0.0.1:9"}));'
    )
    pg.goto(server.url + "/?engine=server")
    pg.wait_for_selector("#banner:not([hidden])", timeout=15_000)
    assert "Cannot reach the server at http://127.0.0.1:9" in pg.inner_text("#banner")
    assert pg.inner_text("#model-info") == "server unreachable"


def test_in_browser_mode_streams_from_worker(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.add_init_script(INIT_SCRIPT)
    pg.goto(server.url + f"/?engine=browser&pyodide=/wasm/&model={server.model_url}")
    # the engine is chosen once the page has read its stored conversations (asynchronous)
    pg.wait_for_selector("#browser-panel", state="visible", timeout=30_000)
    t0 = time.time()
    pg.click("#gguf-load")
    pg.wait_for_selector('#load-status[data-state="ready"], #load-status[data-state="error"]', timeout=180_000)
    load_s = time.time() - t0
    assert "Model ready" in pg.inner_text("#load-status"), pg.inner_text("#load-status") + "\n" + log.dump()
    assert "fast numerics" in pg.inner_text("#load-status")  # the in-browser default
    # SmolLM2's float32 weights (513 MiB) fit the wasm budget: dense, ~2x faster there than packed
    assert "dense weights" in pg.inner_text("#load-status")
    assert "ctx 2048" in pg.inner_text("#model-info")
    statuses = pg.evaluate("window.__loadStatus")
    assert any("Loading Pyodide" in t for t in statuses), statuses
    assert any(re.search(r"[\d.]+ / 93\.8 MiB", t) for t in statuses), statuses  # download progress

    msg = send(pg, QUESTION, 300_000)
    partials = pg.evaluate("window.__partials")
    assert len(partials) >= 3, f"worker answer was not streamed: {partials}"
    expected = server_answer(server, QUESTION)
    # Same engine, template and tokens, but Pyodide's NumPy has no BLAS, so the float sums run
    # in another order and a near-tie late in a greedy run may flip (exact token parity over
    # 16 tokens is tests/wasm/test_node_parity.py's job). The start must agree.
    common = os.path.commonprefix([msg["content"], expected])  # noqa: RUF071 (characters are meant)
    assert len(common) >= min(20, len(expected)), f"worker {msg['content']!r} vs server {expected!r}\n{log.dump()}"
    tps = msg["timings"]["predicted_per_second"]
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "web-browser-chat.png"))

    # Stop: a long generation ends as soon as Stop is pressed; the page stays responsive.
    pg.evaluate("window.pyllamaUI.settings.n_predict = 400")
    pg.evaluate("window.__partials = []")
    pg.fill("#input", "Write a long story about a dragon.")
    pg.press("#input", "Enter")
    pg.wait_for_function("window.__partials.length >= 3", timeout=120_000)
    t_stop = time.time()
    pg.click("#stop")
    pg.wait_for_function("!document.querySelector('.msg.assistant[data-done=\"0\"]')", timeout=30_000)
    stop_s = time.time() - t_stop
    stopped = last_assistant(pg)
    assert stopped["stop_type"] == "stopped"
    assert len(stopped["content"]) > 0 and stop_s < 10
    (ARTIFACTS / "web-browser-speed.json").write_text(json.dumps(
        {"model": server.model_url.rsplit("/", 1)[-1], "load_s": round(load_s, 1),
         "predicted_per_second": round(tps, 2), "stop_latency_s": round(stop_s, 2)}, indent=1) + "\n")  # fmt: skip
    print(f"\nin-browser SmolLM2: load {load_s:.1f} s, {tps:.2f} tok/s, stop took {stop_s:.2f} s")
    assert not log.errors, log.dump()


def test_server_mode_under_api_prefix(page: tuple[Any, PageLog], site: Path, smollm2_path: Path) -> None:
    """With `--api-prefix /llm` the page is at /llm/ and asks the server there: /llm/props for
    the model line, /llm/v1/chat/completions for the answer (nothing is served outside /llm)."""
    pg, log = page
    extra = ["-c", "1024", "-np", "1", "-n", str(N_PREDICT)]
    ARTIFACTS.mkdir(exist_ok=True)
    with run_server(site, smollm2_path, _free_port(), extra, ARTIFACTS / "browser-prefix-server.log",
                    prefix="/llm") as (srv, _):
        assert srv.url.endswith("/llm")
        asked: list[str] = []
        pg.on("request", lambda req: asked.append(req.url))
        pg.add_init_script(INIT_SCRIPT)
        pg.goto(srv.url + "/?engine=server")
        pg.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
        # -m /full/path.gguf without -a: the file name is shown, the path is in the tooltip
        assert pg.inner_text("#model-info") == f"{smollm2_path.name} · ctx 1024"
        assert str(smollm2_path) in pg.get_attribute("#model-info", "title")
        msg = send(pg, QUESTION, 120_000)
        assert msg["content"].strip() and not msg.get("error"), log.dump()
        assert msg["content"] == server_answer(srv, QUESTION)
        api = [u for u in asked if "/props" in u or "/chat/completions" in u]
        assert api and all("/llm/" in u for u in api), api
        assert not log.errors, log.dump()
