// Model output -> safe HTML: markdown-it (CommonMark + tables, strikethrough, bare links),
// KaTeX for math, then DOMPurify over the whole result.
//
// Model output is untrusted text. Three layers keep it inert: markdown-it runs with raw
// HTML off (tags stay text) and refuses javascript:/data: links, images are switched off
// (no request to a URL a model wrote), and DOMPurify sanitizes the final HTML, including
// KaTeX's. The libraries are vendored in web/vendor/ from the npm registry by
// `make web-vendor` (tools/web_vendor.py), licences beside them; no CDN at run time.
// KaTeX is a classic script (window.katex); without it, math stays as TeX in <code>.
//
// Streaming: this runs on every painted frame, so half-finished input must look right; an
// unclosed ``` fence renders as a code block in progress (class "open").
import MarkdownIt from "./vendor/markdown-it.esm.min.js";
import DOMPurify from "./vendor/purify.es.js";

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
}

// ---- code highlighting (small and dependency-free; colours in style.css meet WCAG AA) --
const KEYWORDS = new Set((
  "as async await break case catch class const continue def del elif else except export extends false " +
  "finally fn for from func function if impl import in interface is lambda let match mut new nil None " +
  "not null or pass pub raise return self static struct switch this throw true True False try type typeof " +
  "use var void while with yield and int float str bool char double long unsigned"
).split(" "));

export function highlight(code) {
  const re = /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/)|("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_]\w*)/g;
  let out = "";
  let last = 0;
  for (let m; (m = re.exec(code)); ) {
    out += escapeHtml(code.slice(last, m.index));
    const [tok, com, str, num, word] = m;
    if (com) out += `<span class="hl-com">${escapeHtml(com)}</span>`;
    else if (str) out += `<span class="hl-str">${escapeHtml(str)}</span>`;
    else if (num) out += `<span class="hl-num">${num}</span>`;
    else if (word && KEYWORDS.has(word)) out += `<span class="hl-kw">${word}</span>`;
    else out += escapeHtml(tok);
    last = m.index + tok.length;
  }
  return out + escapeHtml(code.slice(last));
}

function codeBlock(lang, code, open) {
  const l = (lang || "").replace(/[^\w+#.-]/g, "").slice(0, 20);
  return `<div class="code-block${open ? " open" : ""}"><div class="code-head"><span>${escapeHtml(l || "code")}</span>` +
    `<button type="button" class="copy-code" title="Copy code">copy</button></div>` +
    `<pre><code${l ? ` class="lang-${l}"` : ""}>${highlight(code)}</code></pre></div>`;
}

// ---- markdown-it -------------------------------------------------------------------
const md = new MarkdownIt({ html: false, linkify: true, breaks: true, typographer: false });
md.disable("image");
md.renderer.rules.fence = (tokens, idx, _opts, env) => {
  const t = tokens[idx];
  const [start, end] = t.map ?? [0, 0];
  const last = env.lines?.[end - 1] ?? "";
  const closer = new RegExp(`^ {0,3}\\${t.markup[0]}{${t.markup.length},}\\s*$`);
  const open = end - 1 <= start || !closer.test(last); // no closing fence yet: still streaming
  return codeBlock(t.info.trim().split(/\s+/)[0], t.content.replace(/\n$/, ""), open);
};
md.renderer.rules.table_open = () => '<div class="table-wrap"><table>';
md.renderer.rules.table_close = () => "</table></div>";

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});
const PURIFY = { ADD_ATTR: ["target"], FORBID_TAGS: ["style", "img", "form", "input", "button"], ALLOW_DATA_ATTR: false };
// our own copy button in code blocks is added after sanitizing (see addCopyButtons)

// ---- math ----------------------------------------------------------------------------
// $$…$$ and \[…\] display, \(…\) and $…$ inline ($ only when it hugs its text and is not
// followed by a digit, so "$5 and $10" stays money; no backtick inside). Code spans and
// fences are left alone.
const MATH = /(```[\s\S]*?(?:```|$)|~~~[\s\S]*?(?:~~~|$)|`[^`\n]*`)|\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|(?<![\w$\\])\$(?=[^\s$])([^$\n`]*?[^\s$\\`])\$(?!\d)/g;
const MARK = (i) => `\uE000${i}\uE001`;

function renderTex(tex, display) {
  const k = globalThis.katex;
  if (!k) return `<code class="math">${escapeHtml(tex)}</code>`;
  try {
    return k.renderToString(tex, { displayMode: display, throwOnError: false, output: "htmlAndMathml", trust: false, maxExpand: 500 });
  } catch {
    return `<code class="math">${escapeHtml(tex)}</code>`;
  }
}

function extractMath(src) {
  const math = [];
  const text = src.replace(MATH, (m, code, d1, d2, i1, i2) => {
    if (code !== undefined) return m;
    const display = d1 !== undefined || d2 !== undefined;
    math.push(renderTex((d1 ?? d2 ?? i1 ?? i2).trim(), display));
    return MARK(math.length - 1);
  });
  return { text, math };
}

export function renderMarkdown(src) {
  const raw = String(src ?? "").replace(/\r\n?/g, "\n").replace(/\u0000/g, "").replace(/[\uE000\uE001]/g, "");
  if (!raw.trim()) return "";
  const { text, math } = extractMath(raw);
  let html = md.render(text, { lines: text.split("\n") });
  if (math.length) html = html.replace(/\uE000(\d+)\uE001/g, (_, i) => math[Number(i)] ?? "");
  const clean = DOMPurify.sanitize(html, PURIFY);
  return addCopyButtons(clean);
}

// DOMPurify drops <button>; the code blocks' copy buttons are put back, text-only.
function addCopyButtons(html) {
  return html.replace(/<div class="code-head"><span>([^<]*)<\/span><\/div>/g,
    '<div class="code-head"><span>$1</span><button type="button" class="copy-code" title="Copy code">copy</button></div>');
}
