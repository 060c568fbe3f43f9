"""axe-core finds no serious or critical violation on the chat view, the settings dialog and
the sidebar, in the light and the dark theme, on a desktop and a phone viewport.

axe-core comes from the npm registry (`npm pack axe-core@AXE_VERSION`, cached in
~/.cache/pyllama/npm by tools/web_vendor.py's npm_file) and is injected by the test; the
page never ships it. The chat view holds a real answer from the server, with a link,
code, a table and math, so the rendered Markdown is checked too. Screenshots of each
state go to test-artifacts/ (web-a11y-*.png).
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from tests.browser.conftest import PageLog, Server
from tests.wasm.tools import ARTIFACTS, REPO, require_executable

pytestmark = [pytest.mark.browser]

AXE_VERSION = "4.14.1"
RICH = (
    "Here is [a link](https://example.com), `code`, **bold** and $e^{i\\pi} + 1 = 0$.\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 'text'  # note\n```\n"
)


def axe_source() -> str:
    require_executable("npm")
    spec = importlib.util.spec_from_file_location("web_vendor", REPO / "tools" / "web_vendor.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return str(mod.npm_file("axe-core", AXE_VERSION, "axe.min.js").read_text())


def serious(pg: Any, src: str, context: str = "document") -> list[str]:
    if not pg.evaluate("!!window.axe"):
        pg.add_script_tag(content=src)
    res = pg.evaluate(f"axe.run({context}, {{resultTypes: ['violations']}})")
    out = []
    for v in res["violations"]:
        if v["impact"] in ("serious", "critical"):
            targets = [str(n["target"]) + " " + n.get("failureSummary", "")[:160] for n in v["nodes"][:4]]
            out.append(f"{v['id']} ({v['impact']}): {v['help']} -> {targets}")
    return out


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_chat_settings_sidebar(page: tuple[Any, PageLog], server: Server, theme: str) -> None:
    pg, log = page
    src = axe_source()
    settings = {"temperature": 0, "seed": 42, "n_predict": 8, "theme": theme}
    pg.add_init_script(f"localStorage.setItem('pyllama.settings.v1', {json.dumps(json.dumps(settings))});")
    pg.goto(server.url + "/")
    pg.wait_for_function("document.querySelector('#model-info').textContent.includes('ctx')", timeout=30_000)
    pg.fill("#input", "Say hello.")
    pg.press("#input", "Enter")
    pg.wait_for_selector('.msg.assistant[data-done="1"]', timeout=120_000)
    # a rich answer (links, code, a table, math) as the renderer draws it
    pg.evaluate(
        """async (md) => {
          const { renderMarkdown } = await import('/markdown.js');
          document.querySelector('.msg.assistant .msg-body').innerHTML = renderMarkdown(md);
        }""",
        RICH,
    )
    assert pg.evaluate("document.documentElement.dataset.theme") == theme
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"web-a11y-chat-{theme}.png"))
    problems = {"chat": serious(pg, src)}

    pg.click("#open-settings")
    pg.screenshot(path=str(ARTIFACTS / f"web-a11y-settings-{theme}.png"))
    problems["settings"] = serious(pg, src, "document.querySelector('#settings')")
    pg.keyboard.press("Escape")

    pg.set_viewport_size({"width": 390, "height": 844})
    pg.wait_for_timeout(400)  # the sidebar slides out of the way
    pg.screenshot(path=str(ARTIFACTS / f"web-a11y-phone-{theme}.png"))
    problems["phone"] = serious(pg, src)
    pg.click("#open-sidebar")
    pg.wait_for_timeout(400)
    pg.screenshot(path=str(ARTIFACTS / f"web-a11y-sidebar-{theme}.png"))
    problems["sidebar"] = serious(pg, src, "document.querySelector('#sidebar')")
    bad = {k: v for k, v in problems.items() if v}
    assert not bad, bad
    assert not log.errors, log.dump()
