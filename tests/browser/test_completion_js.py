"""/completion.js works with the server README's HTML example, unchanged, in Chromium.

The README (seeds) shows a page that imports `llama` from '/completion.js' and
document.write()s every streamed chunk. The page is served at the server's own origin
(Playwright answers that one URL with the example's HTML; everything else, including
/completion.js and POST /completion, goes to the real pyllama-server).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.browser.conftest import PageLog, Server
from tests.wasm.tools import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Verbatim from the llama-server README ("Extending or building alternative Web Front End").
SEED_EXAMPLE = """<html>
  <body>
    <pre>
      <script type="module">
        import { llama } from '/completion.js'

        const prompt = `### Instruction:
Write dad jokes, each one paragraph.
You can use html formatting if needed.

### Response:`

        for await (const chunk of llama(prompt)) {
          document.write(chunk.data.content)
        }
      </script>
    </pre>
  </body>
</html>
"""


def test_seed_example_streams_through_completion_js(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    pg.route(server.url + "/seed-example.html",
             lambda route: route.fulfill(status=200, content_type="text/html", body=SEED_EXAMPLE))  # fmt: skip
    pg.goto(server.url + "/seed-example.html")
    pg.wait_for_function("document.body && document.body.innerText.trim().length > 20", timeout=120_000)
    # The stream is over when the server's slot is idle again (its -n caps the 500 tokens).
    deadline = time.time() + 150
    while time.time() < deadline:
        slots = httpx.get(server.url + "/slots", timeout=10).json()
        if not any(s.get("is_processing") for s in slots):
            break
        pg.wait_for_timeout(500)
    else:
        pytest.fail("the generation started by the example never finished")
    pg.wait_for_timeout(500)  # the last chunk's document.write
    text = pg.evaluate("document.body.innerText")
    assert f"GET {server.url}/completion.js" in requests
    assert f"POST {server.url}/completion" in requests
    assert len(text.strip()) > 20
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "completion-js-seed-example.png"))
    assert not log.errors, log.dump()


def test_completion_js_exports(page: tuple[Any, PageLog], server: Server) -> None:
    """llamaPromise, llamaEventTarget and llamaModelInfo, as llama.cpp's completion.js has them."""
    pg, log = page
    pg.goto(server.url + "/")
    result = pg.evaluate(
        """async () => {
          const m = await import('/completion.js');
          const text = await m.llamaPromise('The capital of France is', { n_predict: 8, temperature: 0 });
          const events = [];
          const done = await new Promise((resolve) => {
            const et = m.llamaEventTarget('1, 2, 3,', { n_predict: 6, temperature: 0 });
            et.addEventListener('message', (e) => events.push(e.detail.content));
            et.addEventListener('done', (e) => resolve(e.detail.content));
          });
          const info = await m.llamaModelInfo();
          return { exports: Object.keys(m).sort(), text, events, done, n_ctx: info.n_ctx };
        }"""
    )
    assert result["exports"] == ["llama", "llamaComplete", "llamaEventTarget", "llamaModelInfo", "llamaPromise"]
    assert result["text"].strip()
    assert "".join(result["events"]) == result["done"] and result["done"].strip()
    assert result["n_ctx"] == 2048
    assert not log.errors, log.dump()
