// A reasoning model's thinking, split from its answer so the UI can fold it away.
//
// Two sources: the server's `reasoning_content` (llama-server with --reasoning-format),
// kept apart by the engine, and thinking tags left in the text (the in-browser engine, or
// a server that passes them through). Tags: <think>…</think>, <thinking>…</thinking> and
// [THINK]…[/THINK]. A tag still open (mid-stream) means everything after it is thinking.

const PAIRS = [["<think>", "</think>"], ["<thinking>", "</thinking>"], ["[THINK]", "[/THINK]"]];

// -> {thinking, answer, open}: open is true while the thinking has not ended yet.
export function splitThinking(text) {
  const s = String(text ?? "");
  for (const [open, close] of PAIRS) {
    const i = s.indexOf(open);
    // only a tag at the start (after whitespace) opens thinking; one mid-answer is text
    if (i < 0 || s.slice(0, i).trim()) continue;
    const j = s.indexOf(close, i + open.length);
    if (j < 0) return { thinking: s.slice(i + open.length).trim(), answer: "", open: true };
    return { thinking: s.slice(i + open.length, j).trim(), answer: s.slice(j + close.length).replace(/^\s+/, ""), open: false };
  }
  // a chat template that opens <think> in the prompt: the answer starts inside the thinking
  for (const [open, close] of PAIRS) {
    if (s.includes(open)) continue; // an opening tag mid-answer: all of it is answer text
    const j = s.indexOf(close);
    if (j >= 0) return { thinking: s.slice(0, j).trim(), answer: s.slice(j + close.length).replace(/^\s+/, ""), open: false };
  }
  return { thinking: "", answer: s, open: false };
}

// The reasoning to show for a message (server field first, then tags) and its answer.
export function reasoningOf(msg) {
  const { thinking, answer, open } = splitThinking(msg.content);
  const parts = [msg.reasoning, thinking].filter((x) => x && x.trim());
  return { reasoning: parts.join("\n\n"), answer, open: open || (!!msg.pending && !!msg.reasoning && !answer) };
}
