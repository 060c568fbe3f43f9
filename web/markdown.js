// A small, safe Markdown renderer for model output (no dependencies, works offline).
//
// Why our own: the UI must work without a CDN, and model output is untrusted text. Safety
// comes from the order of work: every piece of source text is HTML-escaped *before* any
// markup is added, raw HTML is never passed through, and links are emitted only for
// http(s)/mailto URLs. It also renders half-finished input sensibly, because it is called
// on every streamed token (an unclosed ``` fence is shown as a code block in progress).
//
// Supported: fenced code (``` / ~~~, with language label), indented lists (-,*,+ and 1.),
// headings, blockquotes, horizontal rules, pipe tables, paragraphs (single newlines kept as
// line breaks, as chat UIs do), inline code, **bold**, *italic*, ~~strike~~, [links](url)
// and bare URLs.

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
}

function safeUrl(url) {
  const u = url.trim();
  return /^(https?:\/\/|mailto:)/i.test(u) ? u : null;
}

// ---- inline ------------------------------------------------------------------------
export function renderInline(text) {
  const slots = [];
  const keep = (html) => `\u0000${slots.push(html) - 1}\u0000`;
  let s = String(text);
  // code spans first: their content is literal
  s = s.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, _t, code) => keep(`<code>${escapeHtml(code.trim() || code)}</code>`));
  // links [text](url) — text is rendered inline, url must be safe
  s = s.replace(/\[([^\]\n]+)\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g, (m, label, url) => {
    const u = safeUrl(url);
    if (!u) return m;
    return keep(`<a href="${escapeHtml(u)}" target="_blank" rel="noopener noreferrer">${renderInline(label)}</a>`);
  });
  // bare URLs
  s = s.replace(/\bhttps?:\/\/[^\s<>()"'`]+[^\s<>()"'`.,;:!?]/g, (u) =>
    keep(`<a href="${escapeHtml(u)}" target="_blank" rel="noopener noreferrer">${escapeHtml(u)}</a>`));
  s = escapeHtml(s);
  s = s.replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/__(?=\S)([\s\S]*?\S)__/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?![*\w])/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^_\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?![_\w])/g, "$1<em>$2</em>");
  s = s.replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => slots[Number(i)]);
}

// ---- code --------------------------------------------------------------------------
const KEYWORDS = new Set((
  "as async await break case catch class const continue def del elif else except export extends false " +
  "finally fn for from func function if impl import in interface is lambda let match mut new nil None " +
  "not null or pass pub raise return self static struct switch this throw true True False try type typeof " +
  "use var void while with yield and int float str bool char double long unsigned"
).split(" "));

// Tiny tokenizer-based highlighter: strings, comments, numbers and common keywords.
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

// ---- blocks ------------------------------------------------------------------------
const LIST_RE = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

function renderList(lines, i) {
  // lines[i] matches LIST_RE; consume items of this indent level (deeper lines nest)
  const first = lines[i].match(LIST_RE);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const start = ordered ? parseInt(first[2], 10) : 1;
  let html = ordered ? `<ol${start !== 1 ? ` start="${start}"` : ""}>` : "<ul>";
  while (i < lines.length) {
    const m = lines[i].match(LIST_RE);
    if (!m || m[1].length < indent || (m[1].length === indent && /\d/.test(m[2]) !== ordered)) break;
    if (m[1].length > indent) { // nested list inside the previous item
      const [inner, next] = renderList(lines, i);
      html = html.replace(/<\/li>$/, inner + "</li>");
      i = next;
      continue;
    }
    let body = m[3];
    i++;
    while (i < lines.length && lines[i].trim() && !LIST_RE.test(lines[i]) && /^\s+/.test(lines[i])) {
      body += "\n" + lines[i].trim();
      i++;
    }
    html += `<li>${renderInline(body).replace(/\n/g, "<br>")}</li>`;
    if (i < lines.length && !lines[i].trim() && i + 1 < lines.length && LIST_RE.test(lines[i + 1])) i++;
  }
  return [html + (ordered ? "</ol>" : "</ul>"), i];
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|")) s = s.slice(0, -1);
  return s.split("|").map((c) => c.trim());
}

function renderTable(lines, i) {
  const head = splitRow(lines[i]);
  const aligns = splitRow(lines[i + 1]).map((c) => (c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : ""));
  const cell = (tag, c, k) => `<${tag}${aligns[k] ? ` style="text-align:${aligns[k]}"` : ""}>${renderInline(c)}</${tag}>`;
  let html = "<div class=\"table-wrap\"><table><thead><tr>" + head.map((c, k) => cell("th", c, k)).join("") + "</tr></thead><tbody>";
  i += 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
    html += "<tr>" + splitRow(lines[i]).map((c, k) => cell("td", c, k)).join("") + "</tr>";
    i++;
  }
  return [html + "</tbody></table></div>", i];
}

function renderText(text) {
  const lines = text.split("\n");
  let html = "";
  let para = [];
  const flush = () => {
    if (para.length) html += `<p>${renderInline(para.join("\n")).replace(/\n/g, "<br>")}</p>`;
    para = [];
  };
  for (let i = 0; i < lines.length; ) {
    const line = lines[i];
    let m;
    if (!line.trim()) { flush(); i++; continue; }
    if ((m = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/))) {
      flush();
      const n = m[1].length;
      html += `<h${n}>${renderInline(m[2])}</h${n}>`;
      i++;
    } else if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush(); html += "<hr>"; i++;
    } else if (/^\s{0,3}>/.test(line)) {
      flush();
      const quote = [];
      while (i < lines.length && /^\s{0,3}>/.test(lines[i])) quote.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
      html += `<blockquote>${renderText(quote.join("\n"))}</blockquote>`;
    } else if (LIST_RE.test(line)) {
      flush();
      const [h, next] = renderList(lines, i);
      html += h;
      i = next;
    } else if (line.includes("|") && i + 1 < lines.length && /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/.test(lines[i + 1])) {
      flush();
      const [h, next] = renderTable(lines, i);
      html += h;
      i = next;
    } else {
      para.push(line);
      i++;
    }
  }
  flush();
  return html;
}

export function renderMarkdown(src) {
  const text = String(src ?? "").replace(/\r\n?/g, "\n").replace(/\u0000/g, "");
  let html = "";
  const fence = /^( {0,3})(`{3,}|~{3,})\s*([^\n`]*)\n?/gm;
  let pos = 0;
  for (;;) {
    fence.lastIndex = pos;
    const m = fence.exec(text);
    if (!m) break;
    html += renderText(text.slice(pos, m.index));
    const close = new RegExp(`^ {0,3}${m[2][0] === "`" ? "`" : "~"}{${m[2].length},}\\s*$`, "m");
    const body = text.slice(m.index + m[0].length);
    const c = close.exec(body);
    const lang = m[3].trim().split(/\s+/)[0];
    if (!c) { // still streaming: the rest is code
      html += codeBlock(lang, body, true);
      pos = text.length;
      break;
    }
    html += codeBlock(lang, body.slice(0, c.index).replace(/\n$/, ""), false);
    pos = m.index + m[0].length + c.index + c[0].length;
  }
  if (pos < text.length) html += renderText(text.slice(pos));
  return html;
}
