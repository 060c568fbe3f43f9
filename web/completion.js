// /completion.js — a tiny client for pyllama-server (and llama-server) to build your own
// front end, as the server README describes:
//
//   <script type="module">
//     import { llama } from '/completion.js'
//     for await (const chunk of llama("Tell me a joke", { n_predict: 64 })) {
//       document.write(chunk.data.content)
//     }
//   </script>
//
// Exports (the same names and shapes as llama.cpp's completion.js):
//
//   llama(prompt, params = {}, config = {})          async generator of SSE records
//       Streams POST /completion. Each yielded record is {event?, id?, retry?, data}, where
//       `data` is the parsed JSON chunk: {content, tokens, stop, ...}; the final chunk has
//       stop: true plus timings and generation_settings. Returns the whole content.
//       params: any /completion field (n_predict, temperature, stop, grammar, n_probs, ...);
//               `api_key` is sent as a Bearer token and not in the body.
//       config: {controller: AbortController, api_url: "http://host:port", endpoint: "/completion"}
//   llamaEventTarget(prompt, params, config)          EventTarget with "message", "generation_settings",
//                                                     "timings" and "done" ({content}) events
//   llamaPromise(prompt, params, config)              Promise of the whole content
//   llamaComplete(params, controller, callback)       callback(chunk) for every chunk (legacy)
//   llamaModelInfo(config)                            the server's default_generation_settings (/props)

const paramDefaults = {
  stream: true,
  n_predict: 500,
  temperature: 0.2,
  stop: ["</s>"],
};

let generation_settings = null;

export async function* llama(prompt, params = {}, config = {}) {
  const controller = config.controller ?? new AbortController();
  const api_url = config.api_url?.replace(/\/+$/, "") || "";
  const { api_key, ...rest } = params;
  const completionParams = { ...paramDefaults, ...rest, prompt };

  const response = await fetch(`${api_url}${config.endpoint || "/completion"}`, {
    method: "POST",
    body: JSON.stringify(completionParams),
    headers: {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      ...(api_key ? { Authorization: `Bearer ${api_key}` } : {}),
    },
    signal: controller.signal,
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body?.error?.message) message = body.error.message;
    } catch { /* not JSON */ }
    throw new Error(`llama: server error: ${message}`);
  }

  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let content = "";
  let leftover = ""; // a partial line carried to the next read

  try {
    let cont = true;
    while (cont) {
      const result = await reader.read();
      if (result.done) break;
      const text = leftover + decoder.decode(result.value, { stream: true });
      const lines = text.split("\n");
      leftover = text.endsWith("\n") ? "" : lines.pop();

      // An SSE record is a group of `field: value` lines; llama-server sends `data:` (and
      // `error:` on failure) records separated by blank lines.
      const record = {};
      for (const line of lines) {
        const match = /^(\S+?):\s?(.*)$/.exec(line);
        if (!match) continue;
        record[match[1]] = match[2];
        if (record.data === "[DONE]") { cont = false; break; }
        if (record.data !== undefined) {
          const chunk = { ...record, data: JSON.parse(record.data) };
          delete record.data;
          if (chunk.data.error) throw new Error(`llama: ${chunk.data.error.message ?? JSON.stringify(chunk.data.error)}`);
          content += chunk.data.content ?? "";
          yield chunk;
          if (chunk.data.stop) {
            if (chunk.data.generation_settings) generation_settings = chunk.data.generation_settings;
            cont = false;
            break;
          }
        }
        if (record.error !== undefined) {
          let err = record.error;
          try { err = JSON.parse(err); } catch { /* plain text */ }
          throw new Error(`llama: ${err.message ?? err}`);
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") console.error("llama error: ", e);
    throw e;
  } finally {
    controller.abort();
  }
  return content;
}

export const llamaEventTarget = (prompt, params = {}, config = {}) => {
  const eventTarget = new EventTarget();
  (async () => {
    let content = "";
    try {
      for await (const chunk of llama(prompt, params, config)) {
        if (chunk.data) {
          content += chunk.data.content ?? "";
          eventTarget.dispatchEvent(new CustomEvent("message", { detail: chunk.data }));
          if (chunk.data.generation_settings) {
            eventTarget.dispatchEvent(new CustomEvent("generation_settings", { detail: chunk.data.generation_settings }));
          }
          if (chunk.data.timings) eventTarget.dispatchEvent(new CustomEvent("timings", { detail: chunk.data.timings }));
        }
      }
    } catch (e) {
      eventTarget.dispatchEvent(new CustomEvent("error", { detail: e }));
    }
    eventTarget.dispatchEvent(new CustomEvent("done", { detail: { content } }));
  })();
  return eventTarget;
};

export const llamaPromise = async (prompt, params = {}, config = {}) => {
  let content = "";
  for await (const chunk of llama(prompt, params, config)) content += chunk.data.content ?? "";
  return content;
};

export const llamaComplete = async (params, controller, callback) => {
  for await (const chunk of llama(params.prompt, params, { controller })) callback(chunk);
};

export const llamaModelInfo = async (config = {}) => {
  if (!generation_settings) {
    const api_url = config.api_url?.replace(/\/+$/, "") || "";
    const props = await fetch(`${api_url}/props`).then((r) => r.json());
    generation_settings = props.default_generation_settings;
  }
  return generation_settings;
};
