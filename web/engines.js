// Two engines behind one interface, so the UI has a single code path:
//
//   engine.chat(messages, params, signal)  -> async iterator of events
//   engine.complete(prompt, params, signal) -> async iterator of events
//   engine.info()                           -> {model, n_ctx, ...} or throws EngineError
//
// An event is {content, probs?, done?, timings?, usage?, stop_type?}: `content` is new text,
// `probs` one entry per token {token, prob, top: [{token, prob}]}, and the last event has
// done: true. ServerEngine turns llama-server's SSE streams into these events;
// BrowserEngine gets llama-server-shaped /completion chunks from a Web Worker that runs
// the pyllama wheel under Pyodide, and uses the same converter.
import { SAMPLING_FIELDS } from "./sampling_fields.js";
import { sseRecords } from "./sse.js";

export class EngineError extends Error {
  constructor(message, { unreachable = false } = {}) {
    super(message);
    this.unreachable = unreachable; // the server is down or the network is gone (not a refusal)
  }
}

// ---- shared conversion -------------------------------------------------------------
function fromLogprob(e) {
  const tok = e.token ?? e.tok_str ?? "";
  const p = e.prob ?? (e.logprob !== undefined ? Math.exp(e.logprob) : NaN);
  return { token: tok, prob: p };
}

// llama-server /completion chunk (or a worker chunk) -> UI event
export function completionChunkToEvent(d) {
  const ev = { content: d.content ?? "" };
  const cp = d.completion_probabilities;
  if (Array.isArray(cp) && cp.length) {
    ev.probs = cp.map((e) => ({ ...fromLogprob(e), top: (e.top_logprobs ?? e.top_probs ?? e.probs ?? []).map(fromLogprob) }));
  }
  if (d.stop) {
    ev.done = true;
    ev.timings = d.timings;
    ev.stop_type = d.stop_type ?? (d.stopped_eos ? "eos" : d.stopped_word ? "word" : d.stopped_limit ? "limit" : undefined);
  }
  return ev;
}

// OpenAI chat chunk -> UI event
function chatChunkToEvent(d) {
  const choice = d.choices?.[0] ?? {};
  const ev = { content: choice.delta?.content ?? "" };
  if (choice.delta?.reasoning_content) ev.reasoning = choice.delta.reasoning_content; // llama-server --reasoning-format
  const lp = choice.logprobs?.content;
  if (Array.isArray(lp) && lp.length) {
    ev.probs = lp.map((e) => ({ ...fromLogprob(e), top: (e.top_logprobs ?? []).map(fromLogprob) }));
  }
  if (choice.finish_reason) {
    ev.done = true;
    ev.stop_type = choice.finish_reason;
  }
  if (d.timings) ev.timings = d.timings;
  if (d.usage) ev.usage = d.usage;
  return ev;
}

// Every llama-server sampling field (the generated table), plus the grammar fields; `extra`
// (the raw JSON setting) is merged over them.
export const SAMPLING_KEYS = [...SAMPLING_FIELDS.map((f) => f.name), "grammar", "json_schema"];

function samplingFields(p) {
  const out = {};
  for (const k of SAMPLING_KEYS) {
    if (p[k] !== undefined && p[k] !== null && p[k] !== "") out[k] = p[k];
  }
  if (p.stop?.length) out.stop = p.stop;
  return { ...out, ...(p.extra ?? {}) };
}

function unreachable(where, e, midStream) {
  const what = midStream ? "The connection to the server was lost. Cannot reach the server" : "Cannot reach the server";
  return new EngineError(`${what} at ${where} — is pyllama-server running? (${e.message})`, { unreachable: true });
}

// ---- server ------------------------------------------------------------------------
export class ServerEngine {
  constructor(base = "", apiKey = "") {
    this.base = base.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.kind = "server";
  }

  // No server URL: the server that served this page, at the page's own path, so a server
  // started with --api-prefix /llm is asked at /llm/props, not /props.
  where() { return this.base || new URL(".", location.href).href.replace(/\/$/, ""); }

  headers() {
    const h = { "Content-Type": "application/json" };
    if (this.apiKey) h.Authorization = `Bearer ${this.apiKey}`;
    return h;
  }

  async request(path, init = {}) {
    let resp;
    try {
      resp = await fetch(this.where() + path, { ...init, headers: { ...this.headers(), ...(init.headers || {}) } });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw unreachable(this.where(), e, false);
    }
    if (!resp.ok) {
      let msg = `${resp.status} ${resp.statusText}`;
      try {
        const body = await resp.json();
        if (body?.error?.message) msg = `${resp.status}: ${body.error.message}`;
      } catch { /* not JSON */ }
      if (resp.status === 401) msg += " — set the API key in Settings";
      throw new EngineError(`Server error ${msg}`);
    }
    return resp;
  }

  async info() {
    const props = await (await this.request("/props")).json();
    const gs = props.default_generation_settings ?? {};
    const path = props.model_path ?? props.model_alias ?? "";
    return {
      // llama-server names a model without -a by its path as given: show the file name
      model: (props.model_alias || path).split(/[\\/]/).pop() || "model",
      model_path: path,
      n_ctx: gs.n_ctx ?? props.n_ctx,
      total_slots: props.total_slots,
      chat_template: props.chat_template,
      build_info: props.build_info,
      params: gs.params ?? gs,
    };
  }

  async *stream(path, body, signal, convert) {
    const resp = await this.request(path, { method: "POST", body: JSON.stringify(body), signal });
    let ended = false;
    try {
      for await (const rec of sseRecords(resp, signal)) {
        if (rec.data === "[DONE]") break;
        let d;
        try { d = JSON.parse(rec.data); } catch { throw new EngineError(`Bad data from server: ${rec.data.slice(0, 200)}`); }
        if (rec.event === "error" || d.error) {
          const err = d.error ?? d;
          throw new EngineError(`Server error: ${err.message ?? JSON.stringify(err)}`);
        }
        const ev = convert(d);
        if (ev.done) ended = true;
        yield ev;
      }
    } catch (e) {
      // a read that fails mid-stream (server killed, network gone) is a TypeError "network error"
      if (e instanceof EngineError || e.name === "AbortError" || signal?.aborted) throw e;
      throw unreachable(this.where(), e, true);
    }
    if (!ended && !signal?.aborted) yield { content: "", done: true };
  }

  chat(messages, params, signal) {
    const body = { messages, stream: true, stream_options: { include_usage: true }, ...samplingFields(params) };
    delete body.n_probs;
    if (params.n_predict !== undefined && params.n_predict >= 0) body.max_tokens = params.n_predict;
    if (params.n_probs > 0) { body.logprobs = true; body.top_logprobs = params.n_probs; }
    return this.stream("/v1/chat/completions", body, signal, chatChunkToEvent);
  }

  complete(prompt, params, signal) {
    const body = { prompt, stream: true, n_predict: params.n_predict ?? -1, ...samplingFields(params) };
    return this.stream("/completion", body, signal, completionChunkToEvent);
  }
}

// ---- in-browser (Web Worker + Pyodide) ---------------------------------------------
export const DEFAULT_PYODIDE_URL = "https://cdn.jsdelivr.net/pyodide/v0.27.7/full/";

export class BrowserEngine {
  // pyodideURL: where pyodide.js and the lock live; wheelsURL: where wheels.json (gguf +
  // pyllama wheels) lives. A self-hosted wasm/dist has both; with the CDN, the wheels come
  // from the server's /wasm/ route.
  constructor({ pyodideURL = DEFAULT_PYODIDE_URL, wheelsURL = null, onProgress = () => {} } = {}) {
    this.kind = "browser";
    this.pyodideURL = new URL(pyodideURL, location.href).href.replace(/\/?$/, "/");
    this.wheelsURL = new URL(wheelsURL ?? (pyodideURL === DEFAULT_PYODIDE_URL ? "wasm/" : pyodideURL), location.href).href.replace(/\/?$/, "/");
    this.onProgress = onProgress;
    this.worker = null;
    this.modelInfo = null;
    this.pending = new Map(); // request id -> {push}
    this.nextId = 1;
    this.waiters = [];
  }

  ensureWorker() {
    if (this.worker) return;
    this.worker = new Worker(new URL("./worker.js", import.meta.url));
    this.worker.onmessage = (e) => this.onMessage(e.data);
    this.worker.onerror = (e) => {
      e.preventDefault?.();
      this.fail(new EngineError(`In-browser engine crashed: ${e.message || "worker error"}`));
    };
  }

  fail(err) {
    for (const w of this.waiters) w.reject(err);
    this.waiters = [];
    for (const p of this.pending.values()) p.push({ error: err });
    this.pending.clear();
  }

  onMessage(m) {
    if (m.type === "progress") this.onProgress(m);
    else if (m.type === "loaded") {
      this.modelInfo = m.info;
      const w = this.waiters.shift();
      w?.resolve(m.info);
    } else if (m.type === "load-error") {
      const w = this.waiters.shift();
      w?.reject(new EngineError(m.message));
    } else if (m.type === "chunk" || m.type === "error") {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.type === "error") { p.push({ error: new EngineError(m.message) }); this.pending.delete(m.id); }
      else {
        p.push({ data: m.data });
        if (m.data.stop) this.pending.delete(m.id);
      }
    }
  }

  // source: a File, or a URL string. Resolves with model info once the model is ready.
  // exact: replay llama.cpp's float rounding (about 2x slower under Pyodide; off by default).
  load(source, { nCtx = 2048, exact = false } = {}) {
    this.ensureWorker();
    this.modelInfo = null;
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      const msg = { type: "load", pyodideURL: this.pyodideURL, wheelsURL: this.wheelsURL,
        sessionURL: new URL("./pyllama_session.py", import.meta.url).href, pageURL: location.href, nCtx, exact };
      if (typeof source === "string") msg.url = new URL(source, location.href).href;
      else msg.file = source;
      this.worker.postMessage(msg);
    });
  }

  async info() {
    if (!this.modelInfo) throw new EngineError("No model loaded in the browser yet — pick a .gguf file or enter a URL");
    const i = this.modelInfo;
    return { ...i, model: i.name, model_path: i.general_name ? `${i.name} (${i.general_name})` : i.name, total_slots: 1 };
  }

  async *run(mode, request, signal) {
    if (!this.modelInfo) throw new EngineError("No model loaded in the browser yet — pick a .gguf file or enter a URL");
    const id = this.nextId++;
    const queue = [];
    let wake = null;
    this.pending.set(id, { push: (x) => { queue.push(x); wake?.(); } });
    const onAbort = () => this.worker.postMessage({ type: "stop", id });
    signal?.addEventListener("abort", onAbort);
    this.worker.postMessage({ type: "generate", id, mode, request });
    try {
      for (;;) {
        if (!queue.length) await new Promise((r) => { wake = r; });
        wake = null;
        const x = queue.shift();
        if (x.error) throw x.error;
        const ev = completionChunkToEvent(x.data);
        yield ev;
        if (ev.done) return;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (this.pending.has(id)) { this.worker.postMessage({ type: "stop", id }); this.pending.delete(id); }
    }
  }

  chat(messages, params, signal) {
    return this.run("chat", { messages, n_predict: params.n_predict, ...samplingFields(params) }, signal);
  }

  complete(prompt, params, signal) {
    return this.run("completion", { prompt, n_predict: params.n_predict, ...samplingFields(params) }, signal);
  }

  terminate() {
    this.worker?.terminate();
    this.worker = null;
    this.modelInfo = null;
    this.fail(new EngineError("In-browser engine stopped"));
  }
}
