"""The glue between JavaScript and the pyllama engine under Pyodide (browser worker and Node).

Why it exists: JS should not know the engine's Python API. JS hands over a request dict in
llama-server's /completion shape (or a chat `messages` list) and pulls events one at a time
with `step()`; each event has the shape of one llama-server /completion stream chunk
(`content`, `tokens`, `stop`, `completion_probabilities`, and on the last one `timings`,
`stop_type`, `stopping_word`). One `step()` decodes one token, so the worker can yield to its
event loop between tokens and a "stop" message takes effect at once.

Memory: `alloc(n)` returns a NumPy uint8 array that lives in the wasm heap; JS streams the
GGUF bytes (fetch chunks, File chunks, fs.readSync) straight into it, and `load()` builds the
model on zero-copy views of that one buffer (packed weights: the quantized blocks are used in
place, nothing is expanded to float32).

This file is served as a static asset (web/) and read by wasm/run_node.mjs; it is not part
of the `pyllama` package because it is only the JS boundary, not engine logic. It runs under
CPython too (tests use that to compare against the Pyodide run).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from pyllama.engine import Model
from pyllama.errors import InvalidRequestError
from pyllama.grammar import json_schema_to_grammar
from pyllama.grammar.parser import check_left_recursion, parse_grammar
from pyllama.sampling import SamplingParams
from pyllama.sampling.fields import apply_request
from pyllama.scheduler import Scheduler
from pyllama.speculative import SpecParams
from pyllama.tasks import Event, Final, Partial, Task


def _plain(value: Any) -> Any:
    """Metadata values that convert cleanly to JS (no NumPy scalars or huge arrays)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return None


def sampling_params(req: dict[str, Any]) -> SamplingParams:
    """The request's sampling fields, read and checked as pyllama-server reads them
    (pyllama.sampling.fields): the same names, clamps and 400-style messages."""
    params = SamplingParams()
    apply_request(req, params)
    schema, grammar = req.get("json_schema"), req.get("grammar")
    if schema not in (None, "") and grammar not in (None, ""):
        raise InvalidRequestError("Cannot use both json_schema and grammar")
    if schema not in (None, ""):
        params.grammar = json_schema_to_grammar(json.loads(schema) if isinstance(schema, str) else schema)
    elif isinstance(grammar, str) and grammar:
        check_left_recursion(parse_grammar(grammar))  # a bad grammar fails here, before any work
        params.grammar = grammar
    params.validate()
    return params


class Session:
    """One loaded model and at most one running generation."""

    def __init__(self) -> None:
        self.buffer: np.ndarray[Any, np.dtype[np.uint8]] | None = None
        self.model: Model | None = None
        self.sched: Scheduler | None = None
        self.task_id: int | None = None
        self.prompt: list[int] = []
        self.events: list[Event] = []
        self.info: dict[str, Any] = {}
        self._template: Any = None

    # ---- loading -------------------------------------------------------------------
    def alloc(self, size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The buffer JS fills with the file's bytes (one copy, in the wasm heap)."""
        self.model = self.sched = self._template = None
        self.task_id = None
        self.buffer = None  # drop a previous model before allocating the next one
        self.buffer = np.empty(int(size), dtype=np.uint8)
        return self.buffer

    def load(self, name: str, n_ctx: int = 2048, weights: str = "auto", exact: bool = True) -> dict[str, Any]:
        """Build the model on the filled buffer; returns facts for the UI.

        `exact=False` switches off the replay of llama.cpp's float rounding (fast
        numerics): faster, with probabilities drifting slightly from llama.cpp's.
        """
        if self.buffer is None:
            raise InvalidRequestError("no model bytes: call alloc() and fill the buffer first")

        t0 = time.perf_counter()
        model = Model.from_buffer(
            self.buffer, name, weights=weights, n_ctx=int(n_ctx), numerics="exact" if exact else "fast"
        )
        md = model.metadata
        arch = str(md.get("general.architecture", "?"))
        self.model = model
        # One slot; prompt chunks of 256 tokens keep "stop" responsive during long prompts.
        # The slot's KV cache is reused across turns (cache_prompt), so a chat's next turn
        # only evaluates the new messages.
        self.sched = Scheduler(model, n_batch=256)
        self.info = {
            "name": name,
            "general_name": _plain(md.get("general.name")),
            "architecture": arch,
            "n_tensors": len(model.gguf.tensors),
            "size": int(self.buffer.nbytes),
            "n_ctx_train": _plain(md.get(f"{arch}.context_length")),
            "n_ctx": model.n_ctx,
            "n_embd": _plain(md.get(f"{arch}.embedding_length")),
            "n_layer": _plain(md.get(f"{arch}.block_count")),
            "n_vocab": model.n_vocab,
            "weights": model.weights,
            "exact": bool(exact),
            "has_chat_template": model.chat_template is not None,
            "load_ms": (time.perf_counter() - t0) * 1000.0,
        }
        return self.info

    # ---- prompts -------------------------------------------------------------------
    def _chat_prompt(self, messages: Any) -> str:
        from pyllama.chat.messages import parse_messages
        from pyllama.chat.template import ChatInputs, ChatTemplate

        model = self._need_model()
        if self._template is None:
            # As the server resolves it (asgi/registry.py make_template): BOS/EOS as text.
            tok = model.tokenizer

            def piece(token_id: int | None) -> str:
                if token_id is None or token_id < 0:
                    return ""
                return bytes(tok.token_to_piece(token_id, True)).decode("utf-8", errors="replace")

            md = model.metadata
            self._template = ChatTemplate.resolve(
                model.chat_template,
                bos_token=piece(tok.bos_id),
                eos_token=piece(tok.eos_id),
                add_bos=bool(md.get("tokenizer.ggml.add_bos_token", False)),
                add_eos=bool(md.get("tokenizer.ggml.add_eos_token", False)),
            )
        return str(self._template.apply(ChatInputs(parse_messages(messages))).prompt)

    def prompt_tokens(self, req: dict[str, Any], mode: str = "completion") -> list[int]:
        model = self._need_model()
        if mode == "chat":
            return list(model.tokenizer.tokenize(self._chat_prompt(req.get("messages")), add_special=True, parse_special=True))
        prompt = req.get("prompt", "")
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return [int(t) for t in prompt]
        if not isinstance(prompt, str):
            raise InvalidRequestError("prompt must be a string or a list of token ids")
        return list(model.tokenizer.tokenize(prompt, add_special=True, parse_special=True))

    def _need_model(self) -> Model:
        if self.model is None:
            raise InvalidRequestError("no model loaded")
        return self.model

    # ---- generation ----------------------------------------------------------------
    def start(self, req: Any, mode: str = "completion") -> None:
        """Begin a generation; `req` is a dict (or a Pyodide JsProxy of a JS object)."""
        if hasattr(req, "to_py"):
            req = req.to_py()
        req = dict(req)
        self._need_model()
        assert self.sched is not None
        if self.task_id is not None:
            self.sched.cancel(self.task_id)
        self.prompt = self.prompt_tokens(req, mode)
        n_predict = req.get("n_predict")
        stops = req.get("stop") or []
        task = Task(
            prompt=self.prompt,
            params=sampling_params(req),
            n_predict=-1 if n_predict is None else int(n_predict),
            stop=[s for s in ([stops] if isinstance(stops, str) else stops) if isinstance(s, str)],
            cache_prompt=bool(req.get("cache_prompt", True)),
            speculative=SpecParams().with_request(req),  # llama-server's speculative.* fields (n-gram types)
        )
        self.events.clear()
        self.task_id = self.sched.submit(task, self.events.append)

    def step(self) -> dict[str, Any] | None:
        """Run forward passes until there is something to report; return one stream chunk."""
        if self.task_id is None or self.sched is None:
            return None
        while not self.events:
            if not self.sched.step():
                self.task_id = None
                return None
        chunk: dict[str, Any] = {"content": "", "tokens": [], "stop": False}
        probs: list[dict[str, Any]] = []
        for ev in self.events:
            if isinstance(ev, Partial):
                chunk["content"] += ev.text
                chunk["tokens"].extend(ev.tokens)
                probs.extend(p.to_json() for p in ev.probs)
            elif isinstance(ev, Final):
                self.task_id = None
                if ev.error:
                    self.events.clear()
                    raise InvalidRequestError(ev.error)
                chunk.update(
                    content=chunk["content"] + ev.tail, stop=True, **ev.result_fields(), prompt_tokens=list(self.prompt)
                )
                break
        self.events.clear()
        if probs:
            chunk["completion_probabilities"] = probs
        return chunk

    def abort(self) -> dict[str, Any] | None:
        """Stop the running generation (the UI's Stop button); the slot keeps its cache."""
        if self.task_id is None or self.sched is None:
            return None
        self.sched.cancel(self.task_id)
        self.sched.step()  # applies the cancellation
        self.task_id = None
        self.events.clear()
        return {"content": "", "tokens": [], "stop": True, "stop_type": "abort"}
