"""web/markdown.js renders model output safely: escaped HTML, safe links only, code blocks, math.

Model output is untrusted text, so the renderer is checked in the browser it runs in: no
element or attribute from the input may survive, `javascript:` links stay text, and the
Markdown that chat answers use (code fences, lists, tables, emphasis) becomes the right
elements. An unclosed fence (mid-stream) renders as an open code block. The renderer is
markdown-it + DOMPurify + KaTeX vendored in web/vendor/ (tools/web_vendor.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import PageLog, Server

pytestmark = pytest.mark.browser

CASES = {
    "xss": '<script>alert(1)</script><img src=x onerror="alert(2)"> **b** [x](javascript:alert(3))',
    "rich": "# T\n\n- a\n- b\n  - c\n\n1. one\n2. two\n\n| h1 | h2 |\n|---|--:|\n| 1 | 2 |\n\n> q\n\n"
    "Use `x<y` and *it* and ~~no~~ see https://example.com/a?b=1&c=2.",
    "code": "before\n```python\ndef f():\n    return '<b>'  # c\n```\nafter",
    "open": "text\n```js\nlet a = 1;",
    "math": "Inline $x^2 + y_1$ and \\(a_b\\), money $5 and $10, `$not math$`\n\n$$\\frac{a}{b}$$\n\n"
    "\\[\\href{javascript:alert(1)}{x}\\]\n\nsnake__case__name",
}


def test_markdown_renderer(page: tuple[Any, PageLog], server: Server) -> None:
    pg, log = page
    pg.goto(server.url + "/")
    out: dict[str, Any] = pg.evaluate(
        """async (cases) => {
          const { renderMarkdown } = await import('/markdown.js');
          const res = {};
          for (const [k, src] of Object.entries(cases)) {
            const div = document.createElement('div');
            div.innerHTML = renderMarkdown(src);
            res[k] = {
              html: div.innerHTML,
              tags: [...div.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()),
              attrs: [...div.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name)),
              links: [...div.querySelectorAll('a')].map((a) => a.getAttribute('href')),
              text: div.textContent,
            };
          }
          return res;
        }""",
        CASES,
    )
    xss = out["xss"]
    assert "script" not in xss["tags"] and "img" not in xss["tags"]
    assert not any(a.startswith("on") for a in xss["attrs"])
    assert xss["links"] == []
    assert "<script>alert(1)</script>" in xss["text"] and "[x](javascript:alert(3))" in xss["text"]
    assert "strong" in xss["tags"]

    rich = out["rich"]
    for tag in ("h1", "ul", "ol", "li", "table", "th", "td", "blockquote", "code", "em"):
        assert tag in rich["tags"], tag
    assert "del" in rich["tags"] or "s" in rich["tags"]
    assert rich["tags"].count("ul") == 2  # the nested list
    assert rich["links"] == ["https://example.com/a?b=1&c=2"]
    assert "x<y" in rich["text"]

    code = out["code"]
    assert "pre" in code["tags"] and "b" not in code["tags"]
    assert "return '<b>'  # c" in code["text"]
    assert 'class="lang-python"' in code["html"]

    assert 'class="code-block open"' in out["open"]["html"] and "let a = 1;" in out["open"]["text"]
    assert 'class="code-block open"' not in out["code"]["html"]

    math = out["math"]
    assert math["html"].count('class="katex"') == 4, math["html"]  # two inline, two display
    assert math["html"].count("katex-display") == 2
    assert "math" in math["tags"]  # MathML for screen readers
    assert "$5 and $10" in math["text"] and "$not math$" in math["text"]
    assert not any(link and link.startswith("javascript") for link in math["links"])
    assert "strong" not in math["tags"]
    assert not log.errors, log.dump()
