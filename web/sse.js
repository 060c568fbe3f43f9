// Server-Sent Events over fetch(): llama-server streams `data: {json}\n\n` records and the
// OpenAI routes end with `data: [DONE]`. EventSource cannot POST, so we parse the body
// stream ourselves. Yields {event, data} with `data` still a string.

export async function* sseRecords(response, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let idx;
      while ((idx = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx).replace(/^\r?\n\r?\n/, "");
        const rec = parseBlock(block);
        if (rec) yield rec;
      }
    }
    buf += decoder.decode();
    const rec = parseBlock(buf);
    if (rec) yield rec;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock?.();
  }
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "error") { event = "error"; data.push(value); } // llama-server's `error: {...}` line
  }
  return data.length ? { event, data: data.join("\n") } : null;
}
