#!/usr/bin/env node
// Run the unchanged pyllama engine under Pyodide in Node.js.
//
//   node wasm/run_node.mjs DIST MODEL.gguf [--prompt TEXT]... [-n N] [--chat] [--json] [--ignore-eos]
//        [--temp T] [--seed S] [--top-k K] [--n-probs K] [-c N_CTX] [--weights packed|dense]
//        [--fast] [--info] [--tokens-in JSON] [--profile N]
// --fast loads the model with fast numerics (plain float32) instead of the exact replay of llama.cpp.
// --profile N prints (as JSON) pyllama.profiling's per-category/per-layer breakdown of a 32-token
// prompt pass and N decode steps instead of generating (wasm/bench_node.py --profile).
//
// DIST is a directory assembled by `python wasm/build.py` (Pyodide core + numpy + the pure
// wheels + the pyllama wheel, all listed in its pyodide-lock.json, so nothing comes from the
// network). The GGUF file is read exactly once, straight into a NumPy buffer inside the
// wasm heap (no second copy in the JS heap), and handed to the engine's from-buffer loader.
// The session glue (tokenize, template, sample, detokenize) is web/pyllama_session.py, the
// same file the browser worker runs, so Node exercises the browser's code path.
//
// --prompt may be repeated (the model is loaded once). Prints generated text as it streams
// (tok/s on stderr); with --json prints one JSON object: {boot_ms, load_ms, info, results:
// [{prompt, tokens, text, prompt_tokens, stop_type, timings}]}.
import { readFileSync, statSync, openSync, readSync, closeSync } from "node:fs";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SESSION_PY = path.join(HERE, "..", "web", "pyllama_session.py");

function usage(msg) {
  if (msg) console.error(`run_node.mjs: ${msg}`);
  console.error("usage: node wasm/run_node.mjs DIST MODEL.gguf [--prompt TEXT]... [-n N] [--chat] [--json] " +
    "[--ignore-eos] [--temp T] [--seed S] [--top-k K] [--n-probs K] [-c N_CTX] [--weights packed|dense] " +
    "[--info] [--tokens-in JSON]");
  process.exit(2);
}

function parseArgs(argv) {
  const a = { pos: [], prompts: [], ignoreEos: false, n: 16, chat: false, json: false, temp: 0, seed: 42, topK: 40,
    nProbs: 0, nCtx: 512, info: false, fast: false, tokensIn: null, weights: "packed", profile: 0 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${k} needs a value`); return argv[++i]; };
    const num = () => { const v = Number(val()); if (!Number.isFinite(v)) usage(`${k} needs a number`); return v; };
    switch (k) {
      case "--prompt": case "-p": a.prompts.push(val()); break;
      case "--ignore-eos": a.ignoreEos = true; break;
      case "-n": case "--n-predict": a.n = num(); break;
      case "--chat": a.chat = true; break;
      case "--json": a.json = true; break;
      case "--temp": a.temp = num(); break;
      case "--seed": case "-s": a.seed = num(); break;
      case "--top-k": a.topK = num(); break;
      case "--n-probs": a.nProbs = num(); break;
      case "-c": case "--ctx-size": a.nCtx = num(); break;
      case "--weights": a.weights = val(); break;
      case "--info": a.info = true; break;
      case "--fast": a.fast = true; break;
      case "--profile": a.profile = num(); break;
      case "--tokens-in": a.tokensIn = JSON.parse(val()); break;
      case "-h": case "--help": usage(); break;
      default:
        if (k.startsWith("-")) usage(`unknown option ${k}`);
        a.pos.push(k);
    }
  }
  if (a.pos.length !== 2) usage("need DIST and MODEL.gguf");
  return a;
}

const args = parseArgs(process.argv.slice(2));
const dist = path.resolve(args.pos[0]);
const modelPath = path.resolve(args.pos[1]);
let modelSize;
try { statSync(path.join(dist, "pyodide-lock.json")); } catch {
  usage(`${dist} is not an assembled Pyodide directory (run: python wasm/build.py)`);
}
try { modelSize = statSync(modelPath).size; } catch { usage(`${modelPath}: no such file`); }

const t0 = performance.now();
const { loadPyodide } = await import(pathToFileURL(path.join(dist, "pyodide.mjs")).href);
const py = await loadPyodide({ indexURL: dist + path.sep, stdout: (s) => console.error(s), stderr: (s) => console.error(s) });
await py.loadPackage(["pyllama"], { messageCallback: () => {}, errorCallback: (m) => console.error(m) });
py.FS.writeFile("/home/pyodide/pyllama_session.py", readFileSync(SESSION_PY, "utf8"));
const session = py.pyimport("pyllama_session").Session();
const bootMs = performance.now() - t0;

// Read the file once, chunk by chunk, straight into a buffer that lives in the wasm heap.
const t1 = performance.now();
const pybuf = session.alloc(modelSize);
const fd = openSync(modelPath, "r");
let off = 0;
while (off < modelSize) {
  const view = pybuf.getBuffer("u8"); // re-acquired per chunk: wasm memory growth detaches old views
  const n = readSync(fd, view.data, off, Math.min(1 << 24, modelSize - off), off);
  view.release();
  if (n <= 0) { console.error(`run_node.mjs: short read at ${off} of ${modelSize}`); process.exit(1); }
  off += n;
}
closeSync(fd);
pybuf.destroy();
let info;
try {
  info = session.load(path.basename(modelPath), args.nCtx, args.weights, !args.fast).toJs({ dict_converter: Object.fromEntries });
} catch (e) {
  const lines = String(e.message ?? e).trim().split("\n");
  console.error(`run_node.mjs: ${lines[lines.length - 1]}`);
  process.exit(1);
}
const loadMs = performance.now() - t1;
if (args.info) {
  const out = { boot_ms: bootMs, load_ms: loadMs, info };
  console.log(JSON.stringify(out, (k, v) => (typeof v === "bigint" ? Number(v) : v)));
  process.exit(0);
}
if (args.profile > 0) {
  const prof = py.pyimport("pyllama.profiling").profile_model(session.model, 32, args.profile);
  const text = py.pyimport("json").dumps(prof);
  const out = { boot_ms: bootMs, load_ms: loadMs, info, profile: JSON.parse(text) };
  console.log(JSON.stringify(out, (k, v) => (typeof v === "bigint" ? Number(v) : v)));
  process.exit(0);
}

async function runOne(prompt) {
  const request = {
    prompt: args.tokensIn ?? prompt, n_predict: args.n, temperature: args.temp, seed: args.seed,
    top_k: args.topK, n_probs: args.nProbs, ignore_eos: args.ignoreEos,
  };
  if (args.chat) request.messages = [{ role: "user", content: prompt }];
  const pyreq = py.toPy(request);
  try { session.start(pyreq, args.chat ? "chat" : "completion"); } finally { pyreq.destroy(); }
  const tokens = [];
  let text = "";
  let final = null;
  for (;;) {
    const pyev = session.step();
    const ev = pyev?.toJs({ dict_converter: Object.fromEntries });
    pyev?.destroy();
    if (!ev) break;
    if (ev.tokens) tokens.push(...ev.tokens);
    text += ev.content ?? "";
    if (!args.json && ev.content) process.stdout.write(ev.content);
    if (ev.stop) { final = ev; break; }
  }
  const t = final?.timings ?? {};
  if (!args.json) {
    process.stdout.write("\n");
    console.error(`[pyodide] prompt ${t.prompt_n} tok in ${(t.prompt_ms ?? 0).toFixed(0)} ms, ` +
      `${tokens.length} tok at ${(t.predicted_per_second ?? 0).toFixed(2)} tok/s (stop: ${final?.stop_type})`);
  }
  return { prompt, tokens, text, prompt_tokens: final?.prompt_tokens ?? [], stop_type: final?.stop_type, timings: t };
}

const results = [];
try {
  for (const p of args.prompts.length ? args.prompts : ["Hello"]) results.push(await runOne(p));
} catch (e) {
  const lines = String(e.message ?? e).trim().split("\n");
  console.error(`run_node.mjs: ${lines[lines.length - 1]}`);
  process.exit(1);
}
if (args.json) {
  console.log(JSON.stringify({ boot_ms: bootMs, load_ms: loadMs, info, results }));
} else {
  console.error(`[pyodide] boot ${bootMs.toFixed(0)} ms, model load ${loadMs.toFixed(0)} ms`);
}
