"""Issue 17's eight bugs, each seen as a user meets it in headless Chromium.

Every test here failed on 067ac30 (the page before the fix) and passes now. They drive a
real pyllama-server with SmolLM2; bugs 4 and 5 need a stream longer than the shared
server's `-n 40` cap, and bug 4 kills its server with SIGKILL, so they run their own.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PageLog, Server, run_server
from tests.wasm.tools import ARTIFACTS

pytestmark = [pytest.mark.browser]

GREEDY = """
if (!localStorage.getItem("pyllama.settings.v1")) {
  localStorage.setItem("pyllama.settings.v1", JSON.stringify({temperature: 0, seed: 42, n_predict: %d}));
}
window.__partials = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const el = document.querySelector('.msg.assistant[data-done="0"] .msg-body');
    const n = el ? el.textContent.length : 0;
    if (n && window.__partials[window.__partials.length - 1] !== n) window.__partials.push(n);
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
});
"""

DONE = "!document.querySelector('.msg.assistant[data-done=\"0\"]') && document.querySelector('.msg.assistant')"

# WCAG relative luminance and contrast of an element's text against its effective background.
CONTRAST_JS = """(el) => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const v = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return { r: v[0], g: v[1], b: v[2], a: v.length > 3 ? v[3] : 1 }; };
  const lum = (c) => { const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const bg = parse(getComputedStyle(e).backgroundColor);
    if (bg && bg.a > 0) { layers.push(bg); if (bg.a >= 1) break; }
  }
  let bg = { r: 255, g: 255, b: 255 };
  for (const l of layers.reverse()) bg = { r: l.r * l.a + bg.r * (1 - l.a), g: l.g * l.a + bg.g * (1 - l.a), b: l.b * l.a + bg.b * (1 - l.a) };
  const fg = parse(getComputedStyle(el).color);
  const c = { r: fg.r * fg.a + bg.r * (1 - fg.a), g: fg.g * fg.a + bg.g * (1 - fg.a), b: fg.b * fg.a + bg.b * (1 - fg.a) };
  const [hi, lo] = [lum(c), lum(bg)].sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}"""


def send(pg: Any, text: str, timeout_ms: int = 120_000) -> None:
    n = pg.locator('.msg.assistant[data-done="1"]').count()
    pg.fill("#input", text)
    pg.press("#input", "Enter")
    pg.wait_for_function(
        f"document.querySelectorAll('.msg.assistant[data-done=\"1\"]').length > {n} "
        "&& !document.querySelector('.msg.assistant[data-done=\"0\"]')",
        timeout=timeout_ms,
    )


@pytest.fixture
def long_server(site: Path, smollm2_path: Path) -> Iterator[tuple[Server, Any]]:
    """Its own server (port 8851) with a long `-n`, so a reply is still streaming when we act."""
    ARTIFACTS.mkdir(exist_ok=True)
    extra = ["-c", "2048", "-np", "1", "-n", "400"]
    with run_server(site, smollm2_path, 8851, extra, ARTIFACTS / "browser-long-server.log") as pair:
        yield pair


def test_bug1_settings_save_after_relative_pyodide_url(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.goto(server.url + "/?pyodide=/wasm/")
    pg.click("#open-settings")
    assert pg.input_value("[name=pyodide_url]") == "/wasm/"
    pg.fill("[name=temperature]", "0.3")
    pg.click("#settings-save")
    pg.wait_for_function("!document.querySelector('#settings').open", timeout=5_000)
    stored = json.loads(pg.evaluate("localStorage.getItem('pyllama.settings.v1')"))
    assert stored["temperature"] == 0.3 and stored["pyodide_url"] == "/wasm/"
    pg.goto(server.url + "/")  # later visits: still saveable
    pg.click("#open-settings")
    pg.fill("[name=temperature]", "0.4")
    pg.click("#settings-save")
    pg.wait_for_function("!document.querySelector('#settings').open", timeout=5_000)
    # a bad value is refused with a message, not silently
    pg.click("#open-settings")
    pg.fill("[name=pyodide_url]", "ftp://nope")
    pg.click("#settings-save")
    assert pg.evaluate("document.querySelector('#settings').open")
    assert "http" in pg.evaluate("document.querySelector('[name=pyodide_url]').validationMessage")
    assert not log.errors, log.dump()


def test_bug2_two_tabs_keep_both_conversations(browser: Any, server: Server) -> None:
    ctx = browser.new_context(viewport={"width": 1000, "height": 700})
    try:
        ctx.add_init_script(GREEDY % 8)
        a, b = ctx.new_page(), ctx.new_page()
        for p in (a, b):
            p.goto(server.url + "/")
            p.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
        send(a, "Say apple.")
        send(b, "Say banana.")
        # tab A sees B's conversation without a reload
        a.wait_for_function("document.querySelectorAll('#conv-list li').length === 2", timeout=5_000)
        a.reload()
        a.wait_for_selector("#conv-list li")
        a.wait_for_function("document.querySelectorAll('#conv-list li').length === 2", timeout=5_000)
        b.reload()
        b.wait_for_function("document.querySelectorAll('#conv-list li').length === 2", timeout=5_000)
        titles = a.inner_text("#conv-list")
        assert "apple" in titles and "banana" in titles
        # an edit in B (rename A's conversation) shows in A at once and survives both reloads
        b.click("#conv-list li:has-text('apple') .conv-ren")
        b.fill("#conv-list .conv-rename", "Renamed in B")
        b.press("#conv-list .conv-rename", "Enter")
        a.wait_for_function("document.querySelector('#conv-list').textContent.includes('Renamed in B')", timeout=5_000)
        for p in (a, b):
            p.reload()
            p.wait_for_function("document.querySelectorAll('#conv-list li').length === 2", timeout=5_000)
            assert "Renamed in B" in p.inner_text("#conv-list") and "banana" in p.inner_text("#conv-list")
    finally:
        ctx.close()


def test_bug3_dark_mode_contrast(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.emulate_media(color_scheme="dark")
    pg.goto(server.url + "/")
    # the page renders its stored conversations once IndexedDB answers: inject after that
    pg.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)
    pg.evaluate("""async () => {
      const { renderMarkdown } = await import('/markdown.js');
      const art = document.createElement('article');
      art.className = 'msg assistant';
      art.innerHTML = '<div class="msg-body">' + renderMarkdown(
        "See [the docs](https://example.com) and `x`.\\n\\n```python\\ns = 'text'  # a comment\\nn = 42\\nif s: pass\\n```") + '</div>';
      document.querySelector('#messages').replaceChildren(art);
      const b = document.querySelector('#banner'); b.hidden = false; b.innerHTML = '<span>Server error</span>';
    }""")
    els = pg.query_selector_all(
        ".msg-body a, .msg-body code, .msg-body code span, #banner span, #new-chat, #send"
    )
    assert len(els) >= 7
    bad = []
    for el in els:
        if not el.evaluate("(e) => [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())"):
            continue
        ratio = el.evaluate(CONTRAST_JS)
        if ratio < 4.5:
            bad.append((el.evaluate("(e) => e.outerHTML.slice(0, 60)"), round(ratio, 2)))
    assert not bad, bad
    assert not log.errors, log.dump()


def test_bug4_killed_server_mid_stream(page: tuple[Any, PageLog], long_server: tuple[Server, Any]) -> None:
    pg, log = page
    srv, proc = long_server
    pg.add_init_script(GREEDY % 400)
    pg.goto(srv.url + "/")
    pg.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
    pg.fill("#input", "Write a long story about a dragon.")
    pg.press("#input", "Enter")
    pg.wait_for_function("window.__partials.length >= 3", timeout=120_000)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    pg.wait_for_function(DONE, timeout=30_000)
    err = pg.inner_text(".msg.assistant .msg-error")
    assert "Cannot reach the server" in err, err
    assert "network error" not in pg.inner_text("#banner").lower().split("(")[0]
    pg.wait_for_function("document.querySelector('#model-info').textContent === 'server unreachable'", timeout=10_000)
    assert not log.errors, log.dump()


def test_bug5_reload_mid_stream_keeps_partial_reply(page: tuple[Any, PageLog], long_server: tuple[Server, Any]) -> None:
    pg, log = page
    srv, _ = long_server
    pg.add_init_script(GREEDY % 400)
    pg.goto(srv.url + "/")
    pg.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
    pg.fill("#input", "Write a long story about a dragon.")
    pg.press("#input", "Enter")
    pg.wait_for_function("window.__partials.length >= 6", timeout=120_000)
    pg.wait_for_timeout(700)  # the reply is saved as it streams, a few times a second
    seen = pg.inner_text(".msg.assistant .msg-body")
    pg.reload()
    pg.wait_for_selector(".msg.assistant")
    body = pg.inner_text(".msg.assistant .msg-body")
    assert len(body) >= 10 and seen[:10] == body[:10], (seen, body)
    assert "interrupted" in pg.inner_text(".msg.assistant").lower()
    assert pg.get_attribute(".msg.assistant", "data-done") == "1"
    assert not log.errors, log.dump()


def test_bug6_setting_values_not_placeholder_grey(page: tuple[Any, PageLog], server: Server) -> None:
    pg, _ = page
    for scheme in ("light", "dark"):
        pg.emulate_media(color_scheme=scheme)
        pg.goto(server.url + "/")
        pg.click("#open-settings")
        value = pg.eval_on_selector("[name=temperature]", "(e) => getComputedStyle(e).color")
        text = pg.eval_on_selector("body", "(e) => getComputedStyle(e).color")
        assert value == text, (scheme, value, text)
        muted = pg.eval_on_selector("dialog label", "(e) => getComputedStyle(e).color")
        assert muted != value  # labels stay grey; values are text


def test_bug7_offline_first_run_hint_and_model_url(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    # Pyodide unreachable (the CDN offline): the message names the fix
    pg.goto(server.url + "/?engine=browser&pyodide=http://127.0.0.1:9/&model=/gguf/x.gguf")
    pg.click("#gguf-load")
    pg.wait_for_selector('#load-status[data-state="error"]', timeout=60_000)
    status = pg.inner_text("#load-status")
    assert "make wasm" in status and "?pyodide=/wasm/" in status, status
    # the server offers its own model, so in-browser mode needs no file pick
    models = pg.evaluate("fetch('/gguf/').then((r) => r.json())")["models"]
    assert models and models[0]["name"].endswith(".gguf") and models[0]["size"] > 10_000_000
    pg.goto(server.url + "/?engine=browser")
    pg.wait_for_function("document.querySelector('#gguf-url').value.endsWith('.gguf')", timeout=10_000)
    url = pg.input_value("#gguf-url")
    assert url == f"{server.url}/gguf/{models[0]['name']}", url
    head = pg.evaluate(f"fetch({json.dumps(url)}, {{method: 'HEAD'}}).then((r) => r.headers.get('content-length'))")
    assert int(head) == models[0]["size"]
    assert not log.errors, log.dump()


def test_bug8_accessibility_details(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.add_init_script(GREEDY % 8)
    pg.goto(server.url + "/")
    pg.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
    send(pg, "Say hi.")
    # a focused delete button is visible
    pg.focus("#conv-list .conv-del")
    assert float(pg.eval_on_selector("#conv-list .conv-del", "(e) => getComputedStyle(e).opacity")) >= 0.9
    # tabs tell which one is selected
    assert pg.get_attribute("#tab-chat", "aria-selected") == "true"
    assert pg.get_attribute("#tab-completion", "aria-selected") == "false"
    pg.click("#tab-completion")
    assert pg.get_attribute("#tab-completion", "aria-selected") == "true"
    assert pg.get_attribute("#tab-chat", "aria-selected") == "false"
    pg.click("#tab-chat")
    # the message list is not a live region (a screen reader would re-read it every frame)
    assert pg.eval_on_selector("#messages", "(e) => e.closest('[aria-live]')") is None
    # `__` inside a word is not emphasis
    html = pg.evaluate("import('/markdown.js').then((m) => m.renderMarkdown('call snake__case__name and a__b__c here'))")
    assert "<strong>" not in html and "snake__case__name" in html and "a__b__c" in html, html
    assert not log.errors, log.dump()
