// The pyllama web UI: chat and raw completion against either engine (see engines.js).
//
// Query parameters (handy for self-hosting and tests):
//   ?engine=server|browser   start with this engine
//   ?pyodide=URL             Pyodide distribution for the in-browser engine (default: official CDN)
//   ?wheels=URL              where wheels.json + the gguf/pyllama wheels live (default: the
//                            Pyodide URL if self-hosted, else this server's /wasm/)
//   ?model=URL               prefill the in-browser model URL
import { renderMarkdown, escapeHtml } from "./markdown.js";
import { ServerEngine, BrowserEngine, EngineError } from "./engines.js";
import {
  DEFAULT_SETTINGS, loadSettings, saveSettings, loadConversations, saveConversations, newConversation, titleFrom,
} from "./store.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);

const state = {
  settings: loadSettings(),
  conversations: loadConversations(),
  currentId: null,
  engine: null,
  server: null,
  browser: null,
  busy: null, // AbortController of the running generation
  info: null,
};
for (const c of state.conversations) for (const m of c.messages) delete m.pending; // from an interrupted session
if (query.get("pyodide")) state.settings.pyodide_url = query.get("pyodide");
if (query.get("engine")) state.settings.engine = query.get("engine") === "browser" ? "browser" : "server";
if (query.get("model")) $("gguf-url").value = query.get("model");

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

function errorText(e) {
  if (e instanceof EngineError) return e.message;
  return `Error: ${e?.message ?? e}`;
}

function params() {
  const s = state.settings;
  const p = {};
  for (const k of ["temperature", "top_k", "top_p", "min_p", "repeat_penalty", "n_predict", "seed", "n_probs"]) {
    const v = Number(s[k]);
    if (Number.isFinite(v)) p[k] = v;
  }
  return p;
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
    state.browser = new BrowserEngine({ pyodideURL: url, wheelsURL: query.get("wheels"), onProgress: onLoadProgress });
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
  await refreshInfo();
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
      `${(info.size / 2 ** 20).toFixed(0)} MiB, ${info.weights} weights, ${info.exact ? "exact" : "fast"} numerics, loaded in ${(info.total_ms / 1000).toFixed(1)} s)`;
    $("load-status").dataset.state = "ready";
    showBanner(null);
  } catch (e) {
    $("load-status").textContent = errorText(e);
    $("load-status").dataset.state = "error";
    showBanner(errorText(e));
  } finally {
    bar.hidden = true;
    $("gguf-load").disabled = false;
    await refreshInfo();
  }
}

// ---- conversations -----------------------------------------------------------------
function current() {
  return state.conversations.find((c) => c.id === state.currentId) ?? null;
}

function persist() {
  if (!saveConversations(state.conversations)) showBanner("Could not save conversations (browser storage is full or disabled)");
}

function renderConvList() {
  const ul = $("conv-list");
  ul.replaceChildren();
  const list = [...state.conversations].sort((a, b) => b.updated - a.updated);
  for (const c of list) {
    const li = document.createElement("li");
    li.className = c.id === state.currentId ? "active" : "";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conv-open";
    open.textContent = c.title;
    open.title = c.title;
    open.onclick = () => { openConversation(c.id); closeSidebar(); };
    const del = document.createElement("button");
    del.type = "button";
    del.className = "icon conv-del";
    del.setAttribute("aria-label", `Delete ${c.title}`);
    del.innerHTML = TRASH_ICON;
    del.onclick = () => {
      if (!confirm(`Delete "${c.title}"?`)) return;
      state.conversations = state.conversations.filter((x) => x.id !== c.id);
      persist();
      if (state.currentId === c.id) state.currentId = null;
      renderConvList();
      renderMessages();
    };
    li.append(open, del);
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
  return renderMarkdown(msg.content) || (msg.pending ? '<p class="typing">…</p>' : "");
}

function messageEl(conv, msg, index) {
  const el = document.createElement("article");
  el.className = `msg ${msg.role}`;
  el.dataset.index = index;
  if (msg.role === "assistant") el.dataset.done = msg.pending ? "0" : "1";
  const head = document.createElement("div");
  head.className = "msg-head";
  head.innerHTML = `<span class="who">${msg.role === "user" ? "You" : "Assistant"}</span>`;
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
    act("copy", "Copy text", () => navigator.clipboard?.writeText(msg.content));
    if (msg.role === "user") act("edit", "Edit and resend", () => editMessage(conv, index, el));
    if (msg.role === "assistant" && index === conv.messages.length - 1) act("regenerate", "Regenerate this answer", () => regenerate());
    if (msg.role === "assistant" && msg.probs?.length) {
      act(msg.showProbs ? "text" : "probabilities", "Show token probabilities", () => {
        msg.showProbs = !msg.showProbs;
        persist();
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
  foot.textContent = msg.role === "assistant" ? fmtTimings(msg.timings, msg.stop_type) : "";
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
    conv.messages = conv.messages.slice(0, index);
    conv.messages.push({ role: "user", content: text });
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
  for (const m of conv.messages) messages.push({ role: m.role, content: m.content });
  const msg = { role: "assistant", content: "", pending: true };
  conv.messages.push(msg);
  conv.updated = Date.now();
  persist();
  renderConvList();
  renderMessages();
  const el = $("messages").lastElementChild;
  const body = el.querySelector(".msg-body");
  const ctrl = new AbortController();
  setBusy(ctrl);
  let raf = 0;
  const paint = () => {
    raf = 0;
    body.innerHTML = bodyHtml(msg);
    const box = $("messages");
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
  };
  let tFirst = 0;
  let nPieces = 0;
  let usage = null;
  try {
    const p = params();
    for await (const ev of engine.chat(messages, p, ctrl.signal)) {
      if (ev.content) {
        if (!tFirst) tFirst = performance.now();
        else nPieces++;
        msg.content += ev.content;
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
    }
  } finally {
    if (ctrl.signal.aborted) msg.stop_type = "stopped";
    if (!msg.timings && nPieces > 0) {
      // No server timings: estimate from the stream (pieces after the first, over their span).
      const ms = performance.now() - tFirst;
      msg.timings = { prompt_n: usage?.prompt_tokens, predicted_n: usage?.completion_tokens ?? nPieces + 1,
        predicted_per_second: (nPieces / ms) * 1000, estimated: true };
    }
    if (raf) cancelAnimationFrame(raf);
    delete msg.pending;
    setBusy(null);
    persist();
    if (state.currentId === conv.id) renderMessages();
  }
}

function sendMessage(text) {
  if (state.busy || !text.trim()) return;
  const conv = ensureConversation();
  if (!conv.messages.length) conv.title = titleFrom(text);
  conv.messages.push({ role: "user", content: text.trim() });
  generateReply(conv);
}

function regenerate() {
  const conv = current();
  if (!conv || state.busy) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
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
    for await (const ev of state.engine.complete(completion.prompt, params(), ctrl.signal)) {
      completion.generated += ev.content;
      if (ev.probs) completion.probs.push(...ev.probs);
      if (ev.done) stats = fmtTimings(ev.timings, ev.stop_type);
      renderCompletionOutput();
    }
  } catch (e) {
    if (!ctrl.signal.aborted) {
      stats = errorText(e);
      showBanner(stats, state.engine.kind === "server" ? refreshInfo : null);
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
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.mode === mode);
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
function fillSettings(s) {
  const f = $("settings-form");
  for (const el of f.elements) {
    if (!el.name || !(el.name in s)) continue;
    if (el.type === "checkbox") el.checked = !!s[el.name];
    else el.value = s[el.name];
  }
}

function openSettings() {
  fillSettings(state.settings);
  $("settings").showModal();
}

function saveSettingsFromForm() {
  const f = $("settings-form");
  for (const el of f.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") state.settings[el.name] = el.checked;
    else state.settings[el.name] = el.type === "number" ? (el.value === "" ? DEFAULT_SETTINGS[el.name] : Number(el.value)) : el.value;
  }
  saveSettings(state.settings);
  selectEngine(state.settings.engine);
}

// ---- sidebar (phone layout) --------------------------------------------------------
function openSidebar() { document.body.classList.add("sidebar-open"); $("scrim").hidden = false; }
function closeSidebar() { document.body.classList.remove("sidebar-open"); $("scrim").hidden = true; }

// ---- wiring ------------------------------------------------------------------------
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
  $("new-chat").onclick = () => {
    if (state.busy) state.busy.abort();
    state.currentId = null;
    renderConvList();
    renderMessages();
    closeSidebar();
    input.focus();
  };
  $("clear-all").onclick = () => {
    if (!state.conversations.length || !confirm("Delete all conversations?")) return;
    state.conversations = [];
    state.currentId = null;
    persist();
    renderConvList();
    renderMessages();
  };
  for (const t of document.querySelectorAll(".tab")) t.onclick = () => setMode(t.dataset.mode);
  $("engine-select").onchange = (e) => selectEngine(e.target.value);
  $("open-settings").onclick = openSettings;
  $("settings").addEventListener("close", () => {
    if ($("settings").returnValue === "save") saveSettingsFromForm();
  });
  $("settings-reset").onclick = () => fillSettings({ ...DEFAULT_SETTINGS, engine: state.settings.engine, mode: state.settings.mode });
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

wire();
setMode(state.settings.mode === "completion" ? "completion" : "chat");
const latest = [...state.conversations].sort((a, b) => b.updated - a.updated)[0];
state.currentId = latest?.id ?? null;
renderConvList();
renderMessages();
selectEngine(state.settings.engine === "browser" ? "browser" : "server");
window.pyllamaUI = state; // for debugging and tests
