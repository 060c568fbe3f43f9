// The settings dialog: fill, validate, read back; and the request parameters they make.
//
// Validation uses the browser's own constraint messages (min/max on number fields) plus
// custom ones for what HTML cannot check: a Pyodide URL may be a path on this server
// (`/wasm/`, which is why it is not type=url), and the JSON fields must parse to objects.
import { DEFAULT_SETTINGS } from "./store.js";
import { SAMPLING_FIELDS } from "./sampling_fields.js";

const $ = (id) => document.getElementById(id);

// Always sent (the first UI sent these); the rest only when changed from the default, so a
// server that lacks an exotic field is never sent it unless the user asked for it.
const ALWAYS = new Set(["temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "n_probs"]);

// The numeric sampling fields (the generated table); the lists and flags go through Raw JSON.
const NUMERIC = SAMPLING_FIELDS.filter((f) => ["int", "float", "seed"].includes(f.kind)).map((f) => f.name);

function parseObject(text, what) {
  if (!String(text ?? "").trim()) return null;
  let v;
  try { v = JSON.parse(text); } catch (e) { throw new Error(`${what}: not valid JSON (${e.message})`); }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error(`${what}: must be a JSON object ({…})`);
  return v;
}

export function parseSamplers(text) {
  const t = String(text ?? "").trim();
  if (!t) return null;
  if (/[;,\s]/.test(t)) return t.split(/[;,\s]+/).filter(Boolean);
  return /^[a-z_]+$/.test(t) && t.length > 8 ? [t] : t; // one name, or llama.cpp's letter sequence ("dkypmxt")
}

// Settings -> request fields for the engines (n_predict included; `extra` = raw JSON).
export function params(s) {
  const p = {};
  for (const k of [...NUMERIC, "n_predict"]) {
    const v = Number(s[k]);
    if (!Number.isFinite(v) || s[k] === "" || s[k] === null) continue;
    if (ALWAYS.has(k) || k === "n_predict" || v !== DEFAULT_SETTINGS[k]) p[k] = v;
  }
  const samplers = parseSamplers(s.samplers);
  if (samplers) p.samplers = samplers;
  if (String(s.grammar ?? "").trim()) p.grammar = s.grammar;
  try {
    const schema = parseObject(s.json_schema, "JSON schema");
    if (schema) p.json_schema = schema;
    const extra = parseObject(s.custom_json, "Raw JSON");
    if (extra) p.extra = extra;
  } catch { /* refused when saved; an old bad value is ignored */ }
  return p;
}

function urlProblem(value) {
  const v = value.trim();
  if (!v) return "";
  if (/^(\/|\.\/|\.\.\/)/.test(v)) return "";
  try {
    const u = new URL(v);
    if (u.protocol === "http:" || u.protocol === "https:") return "";
  } catch { /* below */ }
  return "Use an http(s) URL or a path on this server such as /wasm/";
}

// Set the custom validity messages of the fields HTML cannot check; returns the first problem.
export function validateForm(form) {
  let first = "";
  const set = (name, msg) => {
    const el = form.elements[name];
    if (!el) return;
    el.setCustomValidity(msg);
    if (msg && !first) first = msg;
  };
  set("pyodide_url", urlProblem(form.elements.pyodide_url.value));
  set("model_url", urlProblem(form.elements.model_url.value));
  for (const [name, what] of [["json_schema", "JSON schema"], ["custom_json", "Raw JSON"]]) {
    try { parseObject(form.elements[name].value, what); set(name, ""); } catch (e) { set(name, e.message); }
  }
  const samplers = form.elements.samplers.value.trim();
  set("samplers", samplers && !/^[A-Za-z_;,\s]+$/.test(samplers) ? "Sampler names separated by ; (letters and _ only)" : "");
  for (const el of form.elements) if (!el.validity.valid && !first) first = `${el.name}: ${el.validationMessage}`;
  return first;
}

export function fillSettings(form, s) {
  for (const el of form.elements) {
    if (!el.name || !(el.name in s)) continue;
    if (el.type === "checkbox") el.checked = !!s[el.name];
    else el.value = s[el.name] ?? "";
  }
  validateForm(form);
}

export function readSettings(form, into) {
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") into[el.name] = el.checked;
    else into[el.name] = el.type === "number" ? (el.value === "" ? DEFAULT_SETTINGS[el.name] : Number(el.value)) : el.value;
  }
  return into;
}

export function wireValidation(form) {
  form.addEventListener("input", () => {
    validateForm(form);
    $("settings-error").textContent = "";
  });
  $("settings-save").addEventListener("click", (e) => {
    const problem = validateForm(form);
    if (problem) {
      e.preventDefault();
      $("settings-error").textContent = problem;
      form.reportValidity();
    }
  });
}
