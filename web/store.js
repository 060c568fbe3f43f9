// Conversations and settings in localStorage. Everything the user typed stays in this
// browser; a storage failure (quota, private mode) never breaks chatting, it only warns.
import { DEFAULT_PYODIDE_URL } from "./engines.js";

const CONV_KEY = "pyllama.conversations.v1";
const SETTINGS_KEY = "pyllama.settings.v1";

export const DEFAULT_SETTINGS = Object.freeze({
  system_prompt: "",
  temperature: 0.8,
  top_k: 40,
  top_p: 0.95,
  min_p: 0.05,
  repeat_penalty: 1.0,
  n_predict: 512,
  seed: -1,
  n_probs: 0,
  server_url: "",
  api_key: "",
  pyodide_url: DEFAULT_PYODIDE_URL,
  n_ctx: 2048,
  browser_exact: false,
  engine: "server",
  mode: "chat",
});

function read(key, fallback) {
  try {
    const s = localStorage.getItem(key);
    return s ? JSON.parse(s) : fallback;
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch (e) {
    console.warn("pyllama: could not save to localStorage:", e);
    return false;
  }
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...read(SETTINGS_KEY, {}) };
}

export function saveSettings(s) {
  return write(SETTINGS_KEY, s);
}

export function loadConversations() {
  const list = read(CONV_KEY, []);
  return Array.isArray(list) ? list.filter((c) => c && c.id && Array.isArray(c.messages)) : [];
}

export function saveConversations(list) {
  return write(CONV_KEY, list);
}

export function newConversation() {
  const now = Date.now();
  return { id: `c${now.toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: "New chat", created: now, updated: now, messages: [] };
}

export function titleFrom(text) {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > 48 ? t.slice(0, 47) + "…" : t || "New chat";
}
