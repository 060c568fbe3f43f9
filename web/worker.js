// The in-browser engine: a classic Web Worker that boots Pyodide, installs the unchanged
// pyllama wheel and runs generation off the page's thread.
//
// Messages in:  {type:"load", pyodideURL, wheelsURL, sessionURL, nCtx, exact, url | file}
//               {type:"generate", id, mode:"chat"|"completion", request}
//               {type:"stop", id}
// Messages out: {type:"progress", phase, loaded, total, message}
//               {type:"loaded", info} | {type:"load-error", message}
//               {type:"chunk", id, data}   data = one llama-server /completion stream chunk
//               {type:"error", id, message}
//
// The model bytes go from the network (or the File) straight into one NumPy buffer in the
// wasm heap, chunk by chunk, so a model is held once, not once in JS and again in wasm.
// Generation runs one token per task and yields to the event loop in between, which is
// what lets a "stop" message in while Python is busy.
"use strict";

let py = null;
let session = null;
let booting = null;
let current = null; // {id, stop: bool}

const post = (m) => self.postMessage(m);
const progress = (phase, message, loaded = 0, total = 0) => post({ type: "progress", phase, message, loaded, total });

function boot(pyodideURL, wheelsURL, sessionURL) {
  if (booting) return booting;
  booting = (async () => {
    const t0 = performance.now();
    progress("boot", `Loading Pyodide from ${pyodideURL}`);
    try {
      importScripts(pyodideURL + "pyodide.js");
    } catch (e) {
      throw new Error(`Cannot load Pyodide from ${pyodideURL} (${e.message}). Offline, or no CDN? ` +
        "Build the offline copy with `make wasm` on the server and open this page with ?pyodide=/wasm/ " +
        "(or set the Pyodide URL in Settings to /wasm/).");
    }
    py = await loadPyodide({ indexURL: pyodideURL });
    progress("boot", "Installing numpy, jinja2, pyyaml");
    await py.loadPackage(["numpy", "pyyaml", "markupsafe", "jinja2", "micropip"], { messageCallback: () => {} });
    progress("boot", "Installing the pyllama wheel");
    const resp = await fetch(wheelsURL + "wheels.json");
    if (!resp.ok) {
      throw new Error(`No pyllama wheel at ${wheelsURL}wheels.json (HTTP ${resp.status}). ` +
        "Build it with `make wasm` (python wasm/build.py) and serve wasm/dist.");
    }
    const wheels = await resp.json();
    const urls = ["gguf", "pyllama"].map((k) => new URL(wheels[k], wheelsURL).href);
    const micropip = py.pyimport("micropip");
    const pyurls = py.toPy(urls);
    try { await micropip.install.callKwargs(pyurls, { deps: false }); } finally { pyurls.destroy(); }
    micropip.destroy();
    const code = await (await fetch(sessionURL)).text();
    py.FS.writeFile("/home/pyodide/pyllama_session.py", code);
    session = py.pyimport("pyllama_session").Session();
    progress("boot", `Pyodide ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  })();
  booting.catch(() => { booting = null; });
  return booting;
}

// Stream `reader` chunks into the Python-side buffer of `size` bytes.
async function fill(buf, reader, size, label) {
  let off = 0;
  let lastReport = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (off + value.length > size) throw new Error(`${label}: got more bytes than announced (${size})`);
    const view = buf.getBuffer("u8"); // fresh view each chunk: memory growth detaches old ones
    try { view.data.set(value, off); } finally { view.release(); }
    off += value.length;
    const now = performance.now();
    if (now - lastReport > 100) { progress("download", label, off, size); lastReport = now; }
  }
  if (off !== size) throw new Error(`${label}: got ${off} bytes, expected ${size} (download cut short?)`);
  progress("download", label, off, size);
}

async function loadModel(m) {
  await boot(m.pyodideURL, m.wheelsURL, m.sessionURL);
  const t0 = performance.now();
  let name, size, reader;
  let kept = Promise.resolve(); // the Cache Storage write: awaited before "ready", so a tab
  // closed right after loading still finds its model on the next visit
  const cache = await openCache();
  if (m.file) {
    name = m.file.name;
    size = m.file.size;
    reader = m.file.stream().getReader();
    progress("download", `Reading ${name}`, 0, size);
    if (cache) { // kept under a URL of its own, so the next visit needs no file pick
      const key = new URL(`__local__/${encodeURIComponent(name)}`, m.pageURL).href;
      kept = cache.put(key, new Response(m.file, { headers: sizeHeaders(size) })).catch(keepFailed);
    }
  } else {
    name = decodeURIComponent(new URL(m.url).pathname.split("/").pop() || "model.gguf");
    let resp = cache ? await cache.match(m.url).catch(() => undefined) : undefined;
    m.fromCache = !!resp;
    if (resp) progress("download", `Reading ${name} from the browser's cache`, 0, 0);
    else {
      progress("download", `Downloading ${m.url}`, 0, 0);
      try { resp = await fetch(m.url); } catch (e) { throw new Error(`Cannot download ${m.url}: ${e.message}`); }
      if (!resp.ok) throw new Error(`Cannot download ${m.url}: HTTP ${resp.status} ${resp.statusText}`);
      const n = Number(resp.headers.get("Content-Length") || 0);
      if (cache && n && !resp.headers.get("Content-Encoding")) {
        // one stream for the wasm heap, one for the cache (written while we read)
        const [a, b] = resp.body.tee();
        kept = cache.put(m.url, new Response(b, { headers: sizeHeaders(n) })).catch(keepFailed);
        resp = new Response(a, { headers: resp.headers });
      }
    }
    size = Number(resp.headers.get("Content-Length") || resp.headers.get("X-Pyllama-Size") || 0);
    if (!size || resp.headers.get("Content-Encoding")) {
      // unknown length: collect, then copy once into the wasm heap
      const all = new Uint8Array(await resp.arrayBuffer());
      size = all.length;
      const buf = session.alloc(size);
      const view = buf.getBuffer("u8");
      view.data.set(all);
      view.release();
      buf.destroy();
      await kept;
      return finishLoad(name, m, t0);
    }
    reader = resp.body.getReader();
  }
  if (size < 24) throw new Error(`${name}: only ${size} bytes — not a GGUF model`);
  let buf;
  try { buf = session.alloc(size); } catch (e) {
    throw new Error(`${name}: cannot allocate ${(size / 2 ** 20).toFixed(0)} MiB in the browser (${e.message.split("\n").pop()})`);
  }
  try { await fill(buf, reader, size, name); } finally { buf.destroy(); }
  await kept;
  return finishLoad(name, m, t0);
}

const MODEL_CACHE = "pyllama-models"; // see model_cache.js
const sizeHeaders = (n) => ({ "Content-Length": String(n), "X-Pyllama-Size": String(n), "Content-Type": "application/octet-stream" });
const keepFailed = (e) => console.warn("pyllama: could not keep the model in the browser:", e);

async function openCache() {
  try { return typeof caches === "undefined" ? null : await caches.open(MODEL_CACHE); } catch { return null; }
}

function finishLoad(name, m, t0) {
  progress("load", `Loading ${name}`);
  // "auto": dense float32 when it fits the engine's wasm budget (about 2x faster), else packed
  const info = session.load(name, m.nCtx, "auto", !!m.exact).toJs({ dict_converter: Object.fromEntries });
  info.total_ms = performance.now() - t0;
  info.from_cache = !!m.fromCache;
  return info;
}

const tick = () => new Promise((r) => setTimeout(r, 0));

async function generate(m) {
  if (current) { post({ type: "error", id: m.id, message: "A generation is already running" }); return; }
  current = { id: m.id, stop: false };
  try {
    const req = py.toPy(m.request);
    try { session.start(req, m.mode); } finally { req.destroy(); }
    for (;;) {
      await tick(); // let "stop" messages in
      const pyev = current.stop ? session.abort() : session.step();
      const ev = pyev ? pyev.toJs({ dict_converter: Object.fromEntries }) : null;
      pyev?.destroy();
      if (!ev) break;
      post({ type: "chunk", id: m.id, data: ev });
      if (ev.stop) break;
    }
  } catch (e) {
    post({ type: "error", id: m.id, message: cleanError(e) });
  } finally {
    current = null;
  }
}

// A Python traceback's last line is the useful part ("InvalidRequestError: ...").
function cleanError(e) {
  const s = String(e?.message ?? e);
  const lines = s.trim().split("\n").filter(Boolean);
  return lines.length > 1 && s.includes("Traceback") ? lines[lines.length - 1] : s;
}

self.onmessage = async (e) => {
  const m = e.data;
  if (m.type === "load") {
    try {
      const info = await loadModel(m);
      post({ type: "loaded", info });
    } catch (err) {
      post({ type: "load-error", message: cleanError(err) });
    }
  } else if (m.type === "generate") {
    await generate(m);
  } else if (m.type === "stop") {
    if (current && current.id === m.id) current.stop = true;
  }
};
