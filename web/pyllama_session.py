"""The glue between JavaScript and the pyllama engine under Pyodide (browser worker and Node).

Why it exists: JS should not know the engine's Python API. JS hands over a request dict in
llama-server's /completion shape (or a chat `messages` list) and pulls events one at a time
with `step()`; each event has the shape of one llama-server /completion stream chunk
(`content`, `tokens`, `stop`, `completion_probabilities`, and on the last one `timings`,
`stop_type`, `stopping_word`). One `step()` decodes one token, so the worker can yield to its
event loop between tokens and a "stop" message takes effect at once.

Memory: `alloc(n)` returns a NumPy uint8 array that lives in the wasm heap; JS streams the
GGUF bytes (fetch chunks, File chunks, fs.readSync) straight into it, and `load()` builds the
model on zero-copy views of that one buffer (packed weights by default).

This file is served as a static asset (web/) and read by wasm/run_node.mjs; it is not part
of the `pyllama` package because it is only the JS boundary, not engine logic.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pyllama.gguf_file import GGUFFile, parse_gguf


def _plain(value: Any) -> Any:
    """Metadata values that convert cleanly to JS (no NumPy scalars or huge arrays)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return None


class Session:
    """One loaded model and at most one running generation."""

    def __init__(self) -> None:
        self.buffer: np.ndarray[Any, np.dtype[np.uint8]] | None = None
        self.gguf: GGUFFile | None = None
        self.model: Any = None
        self.runner: Any = None
        self.info: dict[str, Any] = {}

    # ---- loading -------------------------------------------------------------------
    def alloc(self, size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The buffer JS fills with the file's bytes (one copy, in the wasm heap)."""
        self.model = self.runner = self.gguf = None
        self.buffer = None  # drop a previous model before allocating the next one
        self.buffer = np.empty(int(size), dtype=np.uint8)
        return self.buffer

    def load(self, name: str, n_ctx: int = 2048, weights: str = "packed") -> dict[str, Any]:
        """Parse the filled buffer and build the model; returns facts for the UI."""
        if self.buffer is None:
            raise ValueError("no model bytes: call alloc() and fill the buffer first")
        t0 = time.perf_counter()
        self.gguf = parse_gguf(self.buffer, name)
        md = self.gguf.metadata
        arch = str(md.get("general.architecture", "?"))
        info: dict[str, Any] = {
            "name": name,
            "general_name": _plain(md.get("general.name")),
            "architecture": arch,
            "n_tensors": len(self.gguf.tensors),
            "size": int(self.buffer.nbytes),
            "n_ctx_train": _plain(md.get(f"{arch}.context_length")),
            "n_embd": _plain(md.get(f"{arch}.embedding_length")),
            "n_layer": _plain(md.get(f"{arch}.block_count")),
            "n_vocab": len(md.get("tokenizer.ggml.tokens", [])),
            "has_chat_template": "tokenizer.chat_template" in md,
            "n_params": int(sum(int(np.prod(t.shape)) for t in self.gguf.tensors.values())),
        }
        try:
            from pyllama_engine_adapter import build_runner  # type: ignore[import-not-found]
        except ImportError:
            build_runner = None
        if build_runner is not None:
            self.runner = build_runner(self.gguf, n_ctx=n_ctx, weights=weights)
            info["n_ctx"] = n_ctx
        info["load_ms"] = (time.perf_counter() - t0) * 1000.0
        self.info = info
        return info
