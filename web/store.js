// Conversations in IndexedDB (one record per conversation) and settings in localStorage.
//
// Why one record per conversation: a tab writes only the conversation it changed, so two
// tabs never overwrite each other's chats from a stale copy of the whole list. Every write
// is announced on a BroadcastChannel; the other tabs re-read that record and redraw.
// Everything the user typed stays in this browser; a storage failure (quota, private
// mode) never breaks chatting, it only warns.
//
// A conversation is a tree of messages, so edit and regenerate keep the earlier versions:
//   {id, title, created, updated, nodes: [{id, parent, role, content, ...}], leaf}
// `leaf` is the last message of the branch on screen; `messages` (the path from the root
// to the leaf) is derived in memory by syncPath() and never stored.
import { DEFAULT_PYODIDE_URL } from "./engines.js";
import { SAMPLING_FIELDS } from "./sampling_fields.js";

const OLD_CONV_KEY = "pyllama.conversations.v1"; // localStorage list of the first UI (migrated once)
export const SETTINGS_KEY = "pyllama.settings.v1";
const DB_NAME = "pyllama";
const STORE = "conversations";

export const DEFAULT_SETTINGS = Object.freeze({
  system_prompt: "",
  // llama.cpp's defaults for every numeric sampling field (the generated table)
  ...Object.fromEntries(SAMPLING_FIELDS.filter((f) => ["int", "float", "seed"].includes(f.kind))
    .map((f) => [f.name, f.default])),
  samplers: "",
  n_predict: 512,
  grammar: "",
  json_schema: "",
  custom_json: "",
  server_url: "",
  api_key: "",
  pyodide_url: DEFAULT_PYODIDE_URL,
  model_url: "",
  n_ctx: 2048,
  browser_exact: false,
  theme: "system",
  engine: "server",
  mode: "chat",
});

// ---- settings (small, synchronous) -------------------------------------------------
function readLS(key, fallback) {
  try {
    const s = localStorage.getItem(key);
    return s ? JSON.parse(s) : fallback;
  } catch {
    return fallback;
  }
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...readLS(SETTINGS_KEY, {}) };
}

export function saveSettings(s) {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
    return true;
  } catch (e) {
    console.warn("pyllama: could not save settings:", e);
    return false;
  }
}

// ---- ids, titles, the message tree -------------------------------------------------
export const newId = (p) => `${p}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;

export function newConversation() {
  const now = Date.now();
  return { id: newId("c"), title: "New chat", created: now, updated: now, nodes: [], leaf: null, messages: [] };
}

export function titleFrom(text) {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > 48 ? t.slice(0, 47) + "…" : t || "New chat";
}

export function node(conv, id) {
  return conv.nodes.find((n) => n.id === id) ?? null;
}

export function children(conv, parent) {
  return conv.nodes.filter((n) => n.parent === parent);
}

export function siblings(conv, n) {
  return children(conv, n.parent);
}

// Recompute conv.messages: the path from the root to conv.leaf.
export function syncPath(conv) {
  const path = [];
  for (let n = node(conv, conv.leaf); n; n = n.parent ? node(conv, n.parent) : null) path.push(n);
  conv.messages = path.reverse();
  return conv.messages;
}

// The newest leaf below `n` (following the latest child at each step).
export function lastLeaf(conv, n) {
  for (;;) {
    const kids = children(conv, n.id);
    if (!kids.length) return n;
    n = kids[kids.length - 1];
  }
}

export function addNode(conv, parent, fields) {
  const n = { id: newId("m"), parent, created: Date.now(), ...fields };
  conv.nodes.push(n);
  conv.leaf = n.id;
  syncPath(conv);
  return n;
}

// A conversation from storage or an import: the tree form, or the first UI's flat list.
export function normalize(c) {
  if (!c || typeof c.id !== "string") return null;
  const conv = { id: c.id, title: String(c.title ?? "New chat"), created: Number(c.created) || Date.now(),
    updated: Number(c.updated) || Date.now(), nodes: [], leaf: null };
  if (Array.isArray(c.nodes)) {
    conv.nodes = c.nodes.filter((n) => n && typeof n.id === "string" && typeof n.content === "string" &&
      ["user", "assistant", "system"].includes(n.role)).map((n) => ({ ...n }));
    const ids = new Set(conv.nodes.map((n) => n.id));
    for (const n of conv.nodes) if (n.parent !== null && !ids.has(n.parent)) n.parent = null;
    conv.leaf = ids.has(c.leaf) ? c.leaf : conv.nodes[conv.nodes.length - 1]?.id ?? null;
  } else if (Array.isArray(c.messages)) {
    let parent = null;
    for (const m of c.messages) {
      if (!m || typeof m.content !== "string" || !["user", "assistant", "system"].includes(m.role)) continue;
      const n = { ...m, id: newId("m"), parent };
      conv.nodes.push(n);
      parent = n.id;
    }
    conv.leaf = parent;
  } else return null;
  syncPath(conv);
  return conv;
}

export function toRecord(conv) {
  const { messages: _, ...rec } = conv;
  return JSON.parse(JSON.stringify(rec));
}

// ---- IndexedDB -----------------------------------------------------------------------
let dbPromise = null;
function db() {
  dbPromise ??= new Promise((resolve, reject) => {
    if (typeof indexedDB === "undefined") { reject(new Error("IndexedDB is not available")); return; }
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "id" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
  });
  return dbPromise;
}

async function run(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const tx = d.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

const channel = typeof BroadcastChannel !== "undefined" ? new BroadcastChannel("pyllama.conversations") : null;
const announce = (msg) => { try { channel?.postMessage(msg); } catch { /* closed */ } };

// cb({op: "put"|"delete"|"clear", id?}) for changes made in another tab
export function onRemoteChange(cb) {
  if (channel) channel.onmessage = (e) => cb(e.data);
}

export async function getConversation(id) {
  return normalize(await run("readonly", (s) => s.get(id)));
}

export async function listConversations() {
  let list = (await run("readonly", (s) => s.getAll())) ?? [];
  const old = readLS(OLD_CONV_KEY, null);
  if (Array.isArray(old)) { // the first UI kept everything in one localStorage list
    const have = new Set(list.map((c) => c.id));
    const moved = old.map(normalize).filter((c) => c && !have.has(c.id));
    for (const c of moved) await putConversation(c, { quiet: true });
    list = list.concat(moved);
    try { localStorage.removeItem(OLD_CONV_KEY); } catch { /* ignore */ }
  }
  return list.map(normalize).filter(Boolean);
}

export async function putConversation(conv, { quiet = false } = {}) {
  await run("readwrite", (s) => s.put(toRecord(conv)));
  if (!quiet) announce({ op: "put", id: conv.id });
}

export async function deleteConversation(id) {
  await run("readwrite", (s) => s.delete(id));
  announce({ op: "delete", id });
}

export async function clearConversations() {
  await run("readwrite", (s) => s.clear());
  announce({ op: "clear" });
}

// ---- export / import -----------------------------------------------------------------
export function exportJSON(convs) {
  return JSON.stringify({ format: "pyllama-conversations", version: 2, exported: new Date().toISOString(),
    conversations: convs.map(toRecord) }, null, 1);
}

// Accepts our export (one or all), a bare conversation or a list of them. Returns normalized
// conversations; an id already present gets a fresh one so an import never overwrites.
export function parseImport(text, existingIds = new Set()) {
  let data;
  try { data = JSON.parse(text); } catch (e) { throw new Error(`Not JSON: ${e.message}`); }
  const raw = Array.isArray(data) ? data : Array.isArray(data?.conversations) ? data.conversations : [data];
  const out = [];
  for (const r of raw) {
    const c = normalize(r);
    if (!c) continue;
    if (existingIds.has(c.id)) c.id = newId("c");
    out.push(c);
  }
  if (!out.length) throw new Error("No conversations found in this file");
  return out;
}
