// The pyllama web UI: chat and raw completion against either engine (see engines.js).
//
// Query parameters (handy for self-hosting and tests):
//   ?engine=server|browser   start with this engine
//   ?pyodide=URL             Pyodide distribution for the in-browser engine (default: official CDN;
//                            a path on this server such as /wasm/ works offline after `make wasm`)
//   ?wheels=URL              where wheels.json + the gguf/pyllama wheels live (default: the
//                            Pyodide URL if self-hosted, else this server's /wasm/)
//   ?model=URL               the in-browser model URL (else Settings, else the server's /gguf/)
import { renderMarkdown, escapeHtml } from "./markdown.js";
import { ServerEngine, BrowserEngine, EngineError } from "./engines.js";
import {
  DEFAULT_SETTINGS, SETTINGS_KEY, loadSettings, saveSettings, newConversation, titleFrom, syncPath, siblings, lastLeaf,
  addNode, listConversations, getConversation, putConversation, deleteConversation, clearConversations,
  onRemoteChange, exportJSON, parseImport,
} from "./store.js";
import { params, fillSettings, readSettings, wireValidation } from "./settings_ui.js";
import { reasoningOf } from "./thinking.js";
import { listCachedModels, deleteCachedModel } from "./model_cache.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
// A static build (tools/web_static.py) sets its own defaults in <meta name="pyllama-defaults">.
const META = (() => {
  try { return JSON.parse(document.querySelector('meta[name="pyllama-defaults"]')?.content ?? "{}"); } catch { return {}; }
})();
const qget = (k) => query.get(k) ?? META[k] ?? null;
const STALE_MS = 4000; // a pending reply not saved for this long was cut short (tab closed or reloaded)
const GEN_KEY = "pyllama.generating"; // sessionStorage: the reply this tab was streaming

const state = {
  settings: loadSettings(),
  conversations: [],
  currentId: null,
  engine: null,
  server: null,
  browser: null,
  busy: null, // AbortController of the running generation
  gen: null, // {convId, nodeId} of the reply streaming in this tab
  info: null,
  search: "",
};
if (qget("pyodide")) state.settings.pyodide_url = qget("pyodide");
if (qget("engine")) state.settings.engine = qget("engine") === "browser" ? "browser" : "server";
$("gguf-url").value = qget("model") || state.settings.model_url || "";

// ---- helpers -----------------------------------------------------------------------
const TRASH_ICON = '<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" fill="none" stroke="currentColor" ' +
  'stroke-width="1.5"><path d="M2.5 4h11M6 4V2.5h4V4M4 4l.8 9.5h6.4L12 4M6.8 6.5v5M9.2 6.5v5"/></svg>';
const STOP_LABELS = { stop: "done", eos: "done", length: "length limit", limit: "length limit", word: "stop word",
  stopped: "stopped", abort: "stopped", tool_calls: "tool call" };

function showBanner(msg, retry) {
  const b = $("banner");
  if (!msg) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false;
  b.innerHTML = `<span>${escapeHtml(msg)}</span>`;
  if (retry) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.textContent = "Retry";
    btn.onclick = retry;
    b.append(btn);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "icon";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "✕";
  close.onclick = () => showBanner(null);
  b.append(close);
}

function announce(text) {
  $("sr-status").textContent = text;
}

function errorText(e) {
  if (e instanceof EngineError) return e.message;
  return `Error: ${e?.message ?? e}`;
}

function fmtTimings(t, stopType) {
  if (!t) return stopType ? STOP_LABELS[stopType] ?? stopType : "";
  const parts = [];
  if (t.prompt_n !== undefined) parts.push(`prompt ${t.prompt_n} tok`);
  if (t.predicted_n !== undefined) parts.push(`${t.predicted_n} tok`);
  if (t.predicted_per_second) parts.push(`${t.estimated ? "≈" : ""}${t.predicted_per_second.toFixed(1)} tok/s`);
  if (stopType) parts.push(STOP_LABELS[stopType] ?? stopType);
  return parts.join(" · ");
}

function download(name, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---- theme -------------------------------------------------------------------------
const THEMES = ["system", "light", "dark"];
function applyTheme() {
  const t = THEMES.includes(state.settings.theme) ? state.settings.theme : "system";
  if (t === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
  const label = `Theme: ${t} (click to change)`;
  $("theme-toggle").setAttribute("aria-label", label);
  $("theme-toggle").title = label;
  $("theme-toggle").textContent = t === "light" ? "☀" : t === "dark" ? "☾" : "◐";
}

// ---- engines -----------------------------------------------------------------------
function serverEngine() {
  const s = state.settings;
  if (!state.server || state.server.base !== s.server_url.replace(/\/+$/, "") || state.server.apiKey !== s.api_key) {
    state.server = new ServerEngine(s.server_url, s.api_key);
  }
  return state.server;
}

function browserEngine() {
  const url = state.settings.pyodide_url || DEFAULT_SETTINGS.pyodide_url;
  if (!state.browser || state.browser.pyodideSetting !== url) {
    state.browser?.terminate();
    state.browser = new BrowserEngine({ pyodideURL: url, wheelsURL: qget("wheels"), onProgress: onLoadProgress });
    state.browser.pyodideSetting = url;
  }
  return state.browser;
}

async function selectEngine(kind) {
  state.settings.engine = kind;
  saveSettings(state.settings);
  $("engine-select").value = kind;
  $("browser-panel").hidden = kind !== "browser";
  state.engine = kind === "browser" ? browserEngine() : serverEngine();
  if (kind === "browser") {
    offerServerModel();
    renderCachedModels();
  }
  await refreshInfo();
}

// The server's own model (/gguf/, see asgi/routes/static.py) as the default model URL, so
// in-browser mode needs no file pick when the page comes from `make serve`.
async function offerServerModel() {
  if ($("gguf-url").value.trim()) return;
  try {
    const base = state.settings.server_url.replace(/\/+$/, "");
    const listURL = new URL(base ? `${base}/gguf/` : "gguf/", location.href);  // relative: --api-prefix
    const r = await fetch(listURL);
    if (!r.ok) return;
    const m = (await r.json()).models?.[0];
    if (m && !$("gguf-url").value.trim()) $("gguf-url").value = new URL(m.url, listURL).href;
  } catch { /* a static host without /gguf/: the user picks a model */ }
}

async function refreshInfo() {
  const el = $("model-info");
  const engine = state.engine;
  state.info = null;
  el.textContent = engine.kind === "browser" ? "no model loaded" : "connecting…";
  el.classList.remove("bad");
  try {
    const info = await engine.info();
    if (engine !== state.engine) return;
    state.info = info;
    el.textContent = `${info.model}${info.n_ctx ? ` · ctx ${info.n_ctx}` : ""}`;
    el.title = [info.model_path, info.n_ctx && `context ${info.n_ctx}`, info.total_slots && `${info.total_slots} slot(s)`,
      info.build_info, info.architecture && `arch ${info.architecture}`].filter(Boolean).join("\n");
    if (engine.kind === "server") showBanner(null);
  } catch (e) {
    if (engine !== state.engine) return;
    if (engine.kind === "server") {
      el.textContent = "server unreachable";
      el.classList.add("bad");
      showBanner(errorText(e), refreshInfo);
    } else {
      el.textContent = "no model loaded";
    }
  }
}

// ---- in-browser model loading ------------------------------------------------------
function onLoadProgress(m) {
  const status = $("load-status");
  const bar = $("load-progress");
  if (m.phase === "download" && m.total) {
    bar.hidden = false;
    bar.max = m.total;
    bar.value = m.loaded;
    status.textContent = `${m.message}: ${(m.loaded / 2 ** 20).toFixed(1)} / ${(m.total / 2 ** 20).toFixed(1)} MiB`;
  } else {
    status.textContent = m.message;
    if (m.phase !== "download") bar.removeAttribute("value");
  }
}

async function loadBrowserModel(source) {
  const engine = browserEngine();
  state.engine = engine;
  const bar = $("load-progress");
  $("load-status").dataset.state = "loading";
  $("gguf-load").disabled = true;
  bar.hidden = false;
  bar.removeAttribute("value");
  $("model-info").textContent = "loading…";
  try {
    const info = await engine.load(source, { nCtx: Number(state.settings.n_ctx) || 2048, exact: !!state.settings.browser_exact });
    $("load-status").textContent = `Model ready: ${info.general_name || info.name} (${info.architecture}, ` +
      `${(info.size / 2 ** 20).toFixed(0)} MiB, ${info.weights} weights, ${info.exact ? "exact" : "fast"} numerics, ` +
      `${info.from_cache ? "from the browser's cache, " : ""}loaded in ${(info.total_ms / 1000).toFixed(1)} s)`;
    $("load-status").dataset.state = "ready";
    showBanner(null);
  } catch (e) {
    $("load-status").textContent = errorText(e);
    $("load-status").dataset.state = "error";
    showBanner(errorText(e));
  } finally {
    bar.hidden = true;
    $("gguf-load").disabled = false;
    renderCachedModels();
    await refreshInfo();
  }
}

async function renderCachedModels() {
  const box = $("cached-models");
  let list = [];
  try { list = await listCachedModels(); } catch { /* no Cache Storage (http on a LAN address) */ }
  box.replaceChildren();
  if (!list.length) return;
  const url = $("gguf-url").value.trim();
  const kept = url && list.find((m) => m.url === new URL(url, location.href).href);
  if (kept && !$("load-status").dataset.state) {
    $("load-status").textContent = `${kept.name} is kept in this browser: Load reads it with no download.`;
  }
  const head = document.createElement("span");
  head.className = "cached-head";
  head.textContent = "Kept in this browser:";
  box.append(head);
  for (const m of list) {
    const item = document.createElement("span");
    item.className = "cached-item";
    const load = document.createElement("button");
    load.type = "button";
    load.className = "link cached-load";
    load.textContent = `${m.name} (${(m.size / 2 ** 20).toFixed(1)} MiB)`;
    load.title = `Load ${m.url} from the browser's cache`;
    load.onclick = () => { $("gguf-url").value = m.url; loadBrowserModel(m.url); };
    const del = document.createElement("button");
    del.type = "button";
    del.className = "icon cached-del";
    del.setAttribute("aria-label", `Delete ${m.name} from the browser`);
    del.innerHTML = TRASH_ICON;
    del.onclick = async () => { await deleteCachedModel(m.url); renderCachedModels(); };
    item.append(load, del);
    box.append(item);
  }
}

// ---- conversations -----------------------------------------------------------------
function current() {
  return state.conversations.find((c) => c.id === state.currentId) ?? null;
}

function persist(conv) {
  if (!conv) return Promise.resolve();
  return putConversation(conv).catch((e) => {
    console.warn("pyllama: could not save the conversation:", e);
    showBanner("Could not save conversations (browser storage is full or disabled)");
  });
}

function matches(c, q) {
  if (!q) return true;
  const needle = q.toLowerCase();
  return c.title.toLowerCase().includes(needle) || c.nodes.some((n) => n.content.toLowerCase().includes(needle));
}

function convButton(cls, label, html, fn) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `icon ${cls}`;
  b.setAttribute("aria-label", label);
  b.title = label;
  b.innerHTML = html;
  b.onclick = fn;
  return b;
}

function renameConversation(c, li) {
  const input = document.createElement("input");
  input.type = "text";
  input.className = "conv-rename";
  input.value = c.title;
  input.setAttribute("aria-label", "Conversation title");
  li.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const t = input.value.trim();
    if (save && t && t !== c.title) {
      c.title = t.slice(0, 200);
      persist(c);
    }
    renderConvList();
  };
  input.onkeydown = (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); finish(false); }
  };
  input.onblur = () => finish(true);
}

function renderConvList() {
  const ul = $("conv-list");
  ul.replaceChildren();
  const list = state.conversations.filter((c) => matches(c, state.search)).sort((a, b) => b.updated - a.updated);
  for (const c of list) {
    const li = document.createElement("li");
    li.className = c.id === state.currentId ? "active" : "";
    li.dataset.id = c.id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conv-open";
    open.textContent = c.title;
    open.title = c.title;
    if (c.id === state.currentId) open.setAttribute("aria-current", "true");
    open.onclick = () => { openConversation(c.id); closeSidebar(); };
    open.ondblclick = () => renameConversation(c, li);
    const ren = convButton("conv-ren", `Rename ${c.title}`, "✎", () => renameConversation(c, li));
    const exp = convButton("conv-exp", `Export ${c.title}`, "⇩", () =>
      download(`${c.title.replace(/[^\w.-]+/g, "_").slice(0, 40) || "conversation"}.json`, exportJSON([c])));
    const del = convButton("conv-del", `Delete ${c.title}`, TRASH_ICON, () => {
      if (!confirm(`Delete "${c.title}"?`)) return;
      state.conversations = state.conversations.filter((x) => x.id !== c.id);
      deleteConversation(c.id).catch((e) => console.warn(e));
      if (state.currentId === c.id) state.currentId = null;
      renderConvList();
      renderMessages();
    });
    li.append(open, ren, exp, del);
    ul.append(li);
  }
  if (!list.length && state.search) {
    const li = document.createElement("li");
    li.className = "conv-none";
    li.textContent = "No conversation matches";
    ul.append(li);
  }
}

function openConversation(id) {
  if (state.busy) state.busy.abort();
  state.currentId = id;
  renderConvList();
  renderMessages();
}

function ensureConversation() {
  let c = current();
  if (!c) {
    c = newConversation();
    state.conversations.push(c);
    state.currentId = c.id;
  }
  return c;
}

// A reply still marked pending in storage: cut short if this tab was streaming it before a
// reload, or if nobody has saved it for STALE_MS (another tab would keep saving it).
function recoverInterrupted(conv, force) {
  let changed = false;
  for (const n of conv.nodes) {
    if (!n.pending) continue;
    if (force.has(n.id) || Date.now() - (n.beat ?? 0) > STALE_MS) {
      delete n.pending;
      n.interrupted = true;
      changed = true;
    }
  }
  if (changed) persist(conv);
  return changed;
}

async function recheckPending() {
  for (const c of state.conversations) {
    if (!c.nodes.some((n) => n.pending) || c.id === state.gen?.convId) continue;
    const fresh = (await getConversation(c.id).catch(() => null)) ?? c;
    if (recoverInterrupted(fresh, new Set())) replaceConversation(fresh);
  }
}

function replaceConversation(c) {
  const i = state.conversations.findIndex((x) => x.id === c.id);
  if (i >= 0) state.conversations[i] = c;
  else state.conversations.push(c);
  renderConvList();
  if (c.id === state.currentId && !document.querySelector("#messages .edit-box")) renderMessages();
}

// Another tab changed storage: re-read what it touched (never the reply this tab is streaming).
async function onRemote(m) {
  if (m.op === "clear") {
    state.conversations = state.conversations.filter((c) => c.id === state.gen?.convId);
    if (!current()) state.currentId = null;
    renderConvList();
    renderMessages();
  } else if (m.op === "delete") {
    if (m.id === state.gen?.convId) return;
    state.conversations = state.conversations.filter((c) => c.id !== m.id);
    if (state.currentId === m.id) { state.currentId = null; renderMessages(); }
    renderConvList();
  } else if (m.op === "put" && m.id !== state.gen?.convId) {
    const c = await getConversation(m.id).catch(() => null);
    if (c) replaceConversation(c);
  }
}

// ---- message rendering -------------------------------------------------------------
function probColor(p) {
  // green (sure) -> red (unsure)
  const h = Math.round(120 * Math.max(0, Math.min(1, p)));
  return `hsla(${h}, 70%, 45%, 0.28)`;
}

function tokensHtml(probs) {
  return probs.map((t, i) =>
    `<span class="tok" data-i="${i}" style="background:${probColor(t.prob)}">${escapeHtml(t.token)}</span>`).join("");
}

function bodyHtml(msg) {
  if (msg.role === "user") return `<div class="plain">${escapeHtml(msg.content)}</div>`;
  if (msg.showProbs && msg.probs?.length) return `<div class="tokens">${tokensHtml(msg.probs)}</div>`;
  const { reasoning, answer, open } = reasoningOf(msg);
  let html = "";
  if (reasoning) {
    html += `<details class="thinking"${msg.showThinking ? " open" : ""}><summary>${open ? "Thinking…" : "Thinking"}</summary>` +
      `<div class="thinking-body">${renderMarkdown(reasoning)}</div></details>`;
  }
  html += renderMarkdown(answer);
  return html || (msg.pending ? '<p class="typing">…</p>' : "");
}

// What the engine is sent for a message: an answer without its thinking.
function forEngine(m) {
  return { role: m.role, content: m.role === "assistant" ? reasoningOf(m).answer : m.content };
}

function siblingNav(conv, msg) {
  const sibs = siblings(conv, msg);
  if (sibs.length < 2) return null;
  const i = sibs.findIndex((s) => s.id === msg.id);
  const nav = document.createElement("span");
  nav.className = "branch-nav";
  const go = (to, label, text) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link";
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.disabled = to < 0 || to >= sibs.length || !!state.busy;
    b.onclick = () => {
      conv.leaf = lastLeaf(conv, sibs[to]).id;
      syncPath(conv);
      persist(conv);
      renderMessages();
    };
    return b;
  };
  const pos = document.createElement("span");
  pos.className = "branch-pos";
  pos.textContent = `${i + 1}/${sibs.length}`;
  nav.append(go(i - 1, "Previous version", "<"), pos, go(i + 1, "Next version", ">"));
  return nav;
}

function footText(msg) {
  if (msg.role !== "assistant") return "";
  const t = fmtTimings(msg.timings, msg.stop_type);
  return msg.interrupted ? [t, "interrupted (the page was closed or reloaded while it was written)"].filter(Boolean).join(" · ") : t;
}

function messageEl(conv, msg, index) {
  const el = document.createElement("article");
  el.className = `msg ${msg.role}`;
  el.dataset.index = index;
  el.setAttribute("aria-label", msg.role === "user" ? "You" : "Assistant");
  if (msg.role === "assistant") el.dataset.done = msg.pending ? "0" : "1";
  const head = document.createElement("div");
  head.className = "msg-head";
  head.innerHTML = `<span class="who">${msg.role === "user" ? "You" : "Assistant"}</span>`;
  const nav = siblingNav(conv, msg);
  if (nav) head.append(nav);
  const actions = document.createElement("span");
  actions.className = "actions";
  const act = (label, title, fn) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link";
    b.textContent = label;
    b.title = title;
    b.onclick = fn;
    actions.append(b);
  };
  if (!msg.pending) {
    act("copy", "Copy text", () => navigator.clipboard?.writeText(forEngine(msg).content));
    if (msg.role === "user") act("edit", "Edit and resend (keeps this version)", () => editMessage(conv, index, el));
    if (msg.role === "assistant" && index === conv.messages.length - 1) {
      act("regenerate", "Regenerate this answer (keeps this version)", () => regenerate());
    }
    if (msg.role === "assistant" && msg.probs?.length) {
      act(msg.showProbs ? "text" : "probabilities", "Show token probabilities", () => {
        msg.showProbs = !msg.showProbs;
        persist(conv);
        renderMessages();
      });
    }
  }
  head.append(actions);
  const body = document.createElement("div");
  body.className = "msg-body";
  body.innerHTML = bodyHtml(msg);
  el.append(head, body);
  if (msg.error) {
    const err = document.createElement("div");
    err.className = "msg-error";
    err.textContent = msg.error;
    el.append(err);
  }
  const foot = document.createElement("div");
  foot.className = "msg-foot";
  foot.textContent = footText(msg);
  el.append(foot);
  return el;
}

function renderMessages() {
  const box = $("messages");
  const conv = current();
  box.replaceChildren();
  if (!conv || !conv.messages.length) {
    box.innerHTML = `<div class="empty"><h1>pyllama</h1><p>llama.cpp's engine, in Python on NumPy. ` +
      `Ask something below${state.settings.engine === "browser" ? " once a model is loaded" : ""}.</p></div>`;
    return;
  }
  conv.messages.forEach((m, i) => box.append(messageEl(conv, m, i)));
  box.scrollTop = box.scrollHeight;
}

function editMessage(conv, index, el) {
  if (state.busy) return;
  const msg = conv.messages[index];
  const body = el.querySelector(".msg-body");
  body.innerHTML = "";
  const ta = document.createElement("textarea");
  ta.className = "edit-box";
  ta.value = msg.content;
  ta.setAttribute("aria-label", "Edit message");
  const save = document.createElement("button");
  save.type = "button";
  save.className = "primary";
  save.textContent = "Save & send";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.textContent = "Cancel";
  const row = document.createElement("div");
  row.className = "edit-row";
  row.append(save, cancel);
  body.append(ta, row);
  ta.focus();
  cancel.onclick = () => renderMessages();
  save.onclick = () => {
    const text = ta.value.trim();
    if (!text) return;
    addNode(conv, msg.parent, { role: "user", content: text }); // a sibling: the old version stays
    if (index === 0) conv.title = titleFrom(text);
    generateReply(conv);
  };
}

// ---- generation --------------------------------------------------------------------
function setBusy(ctrl) {
  state.busy = ctrl;
  $("send").hidden = !!ctrl;
  $("stop").hidden = !ctrl;
  $("complete").hidden = !!ctrl;
  $("complete-stop").hidden = !ctrl;
}

async function generateReply(conv) {
  const engine = state.engine;
  const messages = [];
  if (state.settings.system_prompt.trim()) messages.push({ role: "system", content: state.settings.system_prompt.trim() });
  for (const m of conv.messages) messages.push(forEngine(m));
  const msg = addNode(conv, conv.leaf, { role: "assistant", content: "", pending: true, beat: Date.now() });
  conv.updated = Date.now();
  state.gen = { convId: conv.id, nodeId: msg.id };
  try { sessionStorage.setItem(GEN_KEY, msg.id); } catch { /* ignore */ }
  persist(conv);
  renderConvList();
  renderMessages();
  announce("Answering…");
  const el = $("messages").lastElementChild;
  const body = el.querySelector(".msg-body");
  const ctrl = new AbortController();
  setBusy(ctrl);
  let raf = 0;
  let lastSave = Date.now();
  const paint = () => {
    raf = 0;
    if (state.currentId === conv.id) body.innerHTML = bodyHtml(msg);
    const box = $("messages");
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
    if (Date.now() - lastSave > 300) { // saved as it streams: a reload keeps what was written
      lastSave = Date.now();
      msg.beat = lastSave;
      persist(conv);
    }
  };
  let tFirst = 0;
  let nPieces = 0;
  let usage = null;
  try {
    const p = params(state.settings);
    for await (const ev of engine.chat(messages, p, ctrl.signal)) {
      if (ev.content || ev.reasoning) {
        if (!tFirst) tFirst = performance.now();
        else nPieces++;
        msg.content += ev.content ?? "";
        if (ev.reasoning) msg.reasoning = (msg.reasoning ?? "") + ev.reasoning;
      }
      if (ev.usage) usage = ev.usage;
      if (ev.probs) (msg.probs ??= []).push(...ev.probs);
      if (ev.timings) msg.timings = ev.timings;
      if (ev.stop_type) msg.stop_type = ev.stop_type;
      if (!raf) raf = requestAnimationFrame(paint);
    }
  } catch (e) {
    if (e.name === "AbortError" || ctrl.signal.aborted) msg.stop_type = "stopped";
    else {
      msg.error = errorText(e);
      showBanner(msg.error, engine.kind === "server" ? refreshInfo : null);
      if (e.unreachable && engine === state.engine) refreshInfo(); // the header must not claim a model
    }
  } finally {
    if (state.unloading) return; // a reload cut the stream: keep it pending; the next load marks it interrupted
    if (ctrl.signal.aborted) msg.stop_type = "stopped";
    if (!msg.timings && nPieces > 0) {
      // No server timings: estimate from the stream (pieces after the first, over their span).
      const ms = performance.now() - tFirst;
      msg.timings = { prompt_n: usage?.prompt_tokens, predicted_n: usage?.completion_tokens ?? nPieces + 1,
        predicted_per_second: (nPieces / ms) * 1000, estimated: true };
    }
    if (raf) cancelAnimationFrame(raf);
    delete msg.pending;
    delete msg.beat;
    state.gen = null;
    try { sessionStorage.removeItem(GEN_KEY); } catch { /* ignore */ }
    setBusy(null);
    persist(conv);
    announce(msg.error ? `Error: ${msg.error}` : "Answer complete");
    if (state.currentId === conv.id) renderMessages();
  }
}

function sendMessage(text) {
  if (state.busy || !text.trim()) return;
  const conv = ensureConversation();
  if (!conv.messages.length) conv.title = titleFrom(text);
  addNode(conv, conv.leaf, { role: "user", content: text.trim() });
  generateReply(conv);
}

function regenerate() {
  const conv = current();
  if (!conv || state.busy) return;
  const last = conv.messages[conv.messages.length - 1];
  if (!last || last.role !== "assistant") return;
  conv.leaf = last.parent; // the new answer is a sibling: the old one stays
  syncPath(conv);
  if (conv.messages.length) generateReply(conv);
}

// ---- raw completion mode -----------------------------------------------------------
const completion = { prompt: "", generated: "", probs: [] };

function renderCompletionOutput() {
  const out = $("completion-output");
  out.innerHTML = `<span class="prompt">${escapeHtml(completion.prompt)}</span>` +
    (completion.probs.length ? tokensHtml(completion.probs) : `<span class="gen">${escapeHtml(completion.generated)}</span>`);
}

async function runCompletion() {
  if (state.busy) return;
  const ta = $("completion-input");
  completion.prompt = ta.hidden ? completion.prompt + completion.generated : ta.value;
  completion.generated = "";
  completion.probs = [];
  ta.hidden = true;
  const out = $("completion-output");
  out.hidden = false;
  out.dataset.done = "0";
  renderCompletionOutput();
  $("completion-stats").textContent = "";
  const ctrl = new AbortController();
  setBusy(ctrl);
  let stats = "";
  try {
    for await (const ev of state.engine.complete(completion.prompt, params(state.settings), ctrl.signal)) {
      completion.generated += ev.content;
      if (ev.probs) completion.probs.push(...ev.probs);
      if (ev.done) stats = fmtTimings(ev.timings, ev.stop_type);
      renderCompletionOutput();
    }
  } catch (e) {
    if (!ctrl.signal.aborted) {
      stats = errorText(e);
      showBanner(stats, state.engine.kind === "server" ? refreshInfo : null);
      if (e.unreachable) refreshInfo();
    }
  } finally {
    if (ctrl.signal.aborted) stats = "stopped";
    $("completion-stats").textContent = stats;
    out.dataset.done = "1";
    setBusy(null);
  }
}

function editCompletion() {
  if (state.busy) return;
  const ta = $("completion-input");
  if (!ta.hidden) return;
  ta.value = completion.prompt + completion.generated;
  ta.hidden = false;
  $("completion-output").hidden = true;
}

function setMode(mode) {
  state.settings.mode = mode;
  saveSettings(state.settings);
  for (const t of document.querySelectorAll(".tab")) {
    const on = t.dataset.mode === mode;
    t.classList.toggle("active", on);
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
  }
  $("chat-view").hidden = mode !== "chat";
  $("completion-view").hidden = mode !== "completion";
}

// ---- probability popup -------------------------------------------------------------
function showProbs(target) {
  const pop = $("prob-popup");
  const i = Number(target.dataset.i);
  let probs;
  const msgEl = target.closest(".msg");
  if (msgEl) probs = current()?.messages[Number(msgEl.dataset.index)]?.probs;
  else probs = completion.probs;
  const t = probs?.[i];
  if (!t) return;
  const rows = (t.top?.length ? t.top : [t]).map((c) =>
    `<tr class="${c.token === t.token ? "chosen" : ""}"><td><code>${escapeHtml(JSON.stringify(c.token))}</code></td>` +
    `<td>${(c.prob * 100).toFixed(1)}%</td></tr>`).join("");
  pop.innerHTML = `<table><tbody>${rows}</tbody></table>`;
  pop.hidden = false;
  const r = target.getBoundingClientRect();
  pop.style.left = `${Math.max(4, Math.min(window.innerWidth - pop.offsetWidth - 4, r.left))}px`;
  pop.style.top = `${r.bottom + 4 + pop.offsetHeight > window.innerHeight ? r.top - pop.offsetHeight - 4 : r.bottom + 4}px`;
}

// ---- settings dialog ---------------------------------------------------------------
function openSettings() {
  fillSettings($("settings-form"), state.settings);
  $("settings-error").textContent = "";
  $("settings").showModal();
}

function saveSettingsFromForm() {
  const oldModel = state.settings.model_url;
  readSettings($("settings-form"), state.settings);
  saveSettings(state.settings);
  if (state.settings.model_url.trim() && state.settings.model_url !== oldModel) $("gguf-url").value = state.settings.model_url.trim();
  applyTheme();
  selectEngine(state.settings.engine);
}

// ---- sidebar -----------------------------------------------------------------------
const narrow = () => window.matchMedia("(max-width: 760px)").matches;
function openSidebar() { document.body.classList.add("sidebar-open"); $("scrim").hidden = false; }
function closeSidebar() { document.body.classList.remove("sidebar-open"); $("scrim").hidden = true; }
function toggleSidebar() {
  if (narrow()) {
    if (document.body.classList.contains("sidebar-open")) closeSidebar();
    else { openSidebar(); $("new-chat").focus(); }
  } else document.body.classList.toggle("sidebar-hidden");
}

function newChat() {
  if (state.busy) state.busy.abort();
  state.currentId = null;
  renderConvList();
  renderMessages();
  closeSidebar();
  $("input").focus();
}

async function importFile(file) {
  try {
    const convs = parseImport(await file.text(), new Set(state.conversations.map((c) => c.id)));
    for (const c of convs) {
      state.conversations.push(c);
      await putConversation(c);
    }
    state.currentId = convs[0].id;
    renderConvList();
    renderMessages();
    announce(`Imported ${convs.length} conversation${convs.length > 1 ? "s" : ""}`);
  } catch (e) {
    showBanner(`Import failed: ${e.message}`);
  }
}

// ---- wiring ------------------------------------------------------------------------
function inTextField(e) {
  return e.target.closest?.("input, textarea, select, [contenteditable]");
}

function wire() {
  const input = $("input");
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || state.busy) return;
    input.value = "";
    input.style.height = "";
    sendMessage(text);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    input.style.height = "";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  });
  $("stop").onclick = () => state.busy?.abort();
  $("complete-stop").onclick = () => state.busy?.abort();
  $("complete").onclick = runCompletion;
  $("complete-reset").onclick = editCompletion;
  $("new-chat").onclick = newChat;
  $("clear-all").onclick = () => {
    if (!state.conversations.length || !confirm("Delete all conversations?")) return;
    state.conversations = [];
    state.currentId = null;
    clearConversations().catch((e) => console.warn(e));
    renderConvList();
    renderMessages();
  };
  $("conv-search").addEventListener("input", (e) => { state.search = e.target.value.trim(); renderConvList(); });
  $("export-all").onclick = () => {
    if (state.conversations.length) download("pyllama-conversations.json", exportJSON(state.conversations));
  };
  $("import").onclick = () => $("import-file").click();
  $("import-file").onchange = (e) => { const f = e.target.files?.[0]; if (f) importFile(f); e.target.value = ""; };
  for (const t of document.querySelectorAll(".tab")) {
    t.onclick = () => setMode(t.dataset.mode);
    t.onkeydown = (e) => { // arrow keys move between tabs (WAI-ARIA tabs pattern)
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const next = state.settings.mode === "chat" ? "completion" : "chat";
      setMode(next);
      $(`tab-${next}`).focus();
    };
  }
  $("engine-select").onchange = (e) => selectEngine(e.target.value);
  $("open-settings").onclick = openSettings;
  $("open-help").onclick = () => $("help").showModal();
  $("theme-toggle").onclick = () => {
    state.settings.theme = THEMES[(THEMES.indexOf(state.settings.theme) + 1) % THEMES.length];
    saveSettings(state.settings);
    applyTheme();
  };
  wireValidation($("settings-form"));
  $("settings").addEventListener("close", () => {
    if ($("settings").returnValue === "save") saveSettingsFromForm();
  });
  $("settings-reset").onclick = () =>
    fillSettings($("settings-form"), { ...DEFAULT_SETTINGS, engine: state.settings.engine, mode: state.settings.mode });
  $("gguf-file").onchange = (e) => { const f = e.target.files?.[0]; if (f) loadBrowserModel(f); };
  $("gguf-load").onclick = () => {
    const f = $("gguf-file").files?.[0];
    const url = $("gguf-url").value.trim();
    if (url) loadBrowserModel(url);
    else if (f) loadBrowserModel(f);
    else showBanner("Pick a local .gguf file or enter a model URL first");
  };
  $("open-sidebar").onclick = openSidebar;
  $("close-sidebar").onclick = closeSidebar;
  $("scrim").onclick = closeSidebar;
  document.addEventListener("toggle", (e) => { // remember an opened "Thinking" across repaints
    const d = e.target;
    if (!d.classList?.contains("thinking")) return;
    const msgEl = d.closest(".msg");
    const msg = msgEl && current()?.messages[Number(msgEl.dataset.index)];
    if (msg) msg.showThinking = d.open;
  }, true);
  document.addEventListener("keydown", (e) => {
    const mod = e.ctrlKey || e.metaKey;
    const k = e.key.toLowerCase();
    if (mod && e.shiftKey && k === "o") { e.preventDefault(); newChat(); }
    else if (mod && e.shiftKey && k === "s") { e.preventDefault(); toggleSidebar(); }
    else if (mod && e.shiftKey && k === "f") {
      e.preventDefault();
      if (narrow()) openSidebar();
      else document.body.classList.remove("sidebar-hidden");
      $("conv-search").focus();
    } else if (mod && k === ",") { e.preventDefault(); openSettings(); }
    else if (e.key === "Escape" && state.busy && !document.querySelector("dialog[open]")) state.busy.abort();
    else if (e.key === "?" && !mod && !inTextField(e) && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      $("help").showModal();
    }
  });
  window.addEventListener("storage", (e) => { // settings changed in another tab
    if (e.key !== SETTINGS_KEY) return;
    const { engine, mode } = state.settings;
    state.settings = { ...loadSettings(), engine, mode };
    applyTheme();
  });
  window.addEventListener("pageshow", () => { state.unloading = false; }); // back from the bfcache
  window.addEventListener("pagehide", () => { // best effort: the last words of a reply cut short
    state.unloading = true;
    const c = state.gen && state.conversations.find((x) => x.id === state.gen.convId);
    if (c) persist(c);
  });
  document.addEventListener("click", (e) => {
    const tok = e.target.closest?.(".tok");
    if (tok) { showProbs(tok); return; }
    if (!e.target.closest?.("#prob-popup")) $("prob-popup").hidden = true;
    const copy = e.target.closest?.(".copy-code");
    if (copy) {
      const code = copy.closest(".code-block").querySelector("code").textContent;
      navigator.clipboard?.writeText(code).then(() => { copy.textContent = "copied"; setTimeout(() => { copy.textContent = "copy"; }, 1200); });
    }
  });
  document.addEventListener("mouseover", (e) => { const tok = e.target.closest?.(".tok"); if (tok) showProbs(tok); });
}

async function start() {
  applyTheme();
  wire();
  setMode(state.settings.mode === "completion" ? "completion" : "chat");
  $("input").focus();
  let interruptedHere = new Set();
  try {
    const id = sessionStorage.getItem(GEN_KEY);
    if (id) interruptedHere = new Set([id]);
    sessionStorage.removeItem(GEN_KEY);
  } catch { /* ignore */ }
  try {
    state.conversations = await listConversations();
  } catch (e) {
    showBanner(`Conversations cannot be kept in this browser (${e.message}); chatting still works`);
  }
  for (const c of state.conversations) recoverInterrupted(c, interruptedHere);
  if (state.conversations.some((c) => c.nodes.some((n) => n.pending))) setTimeout(recheckPending, STALE_MS + 500);
  onRemoteChange(onRemote);
  const latest = [...state.conversations].sort((a, b) => b.updated - a.updated)[0];
  state.currentId = latest?.id ?? null;
  renderConvList();
  renderMessages();
  document.body.dataset.ready = "1";
  await selectEngine(state.settings.engine === "browser" ? "browser" : "server");
}

window.pyllamaUI = state; // for debugging and tests
start();
