"""The preparation process's side: large request bodies parsed, templated and tokenized
away from the server's GIL (asgi.prep_process starts it and talks to it).

A thread that runs pure Python (json.loads of 60 MB, a chat template over a long message,
the pre-tokenizer and BPE, json.dumps of 840 K token pieces) shares the GIL with the
model thread and slows every other client's generation down to a fraction of its speed.
This process has its own interpreter and runs on another core; it needs only each
model's vocabulary and chat template, read from the GGUF's metadata (the weights stay
unread on disk), and it runs the very functions the server runs in-process
(asgi.json_text, asgi.chat_render, asgi.prompts), so both paths give the same answers.

Protocol, one job at a time over a duplex pipe: the server sends a pickled `Job` and then
the raw body; the process answers with a pickled `Reply`. A `None` job means "exit".
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import logging
import os
import pickle
import signal
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from asgi.chat_render import check_last_message_fits, render_chat, template_for
from asgi.errors import ApiError, BadRequest
from asgi.json_text import check_depth, dumps, parse_json
from asgi.prompts import check_text_fits, completion_prompts, tokenize_job
from pyllama.chat import ChatTemplate
from pyllama.chat.reasoning import ReasoningConfig
from pyllama.errors import ContextFullError, InvalidRequestError, PyllamaError

log = logging.getLogger("asgi.prep")

MAX_MODELS = 4  # vocabularies kept loaded (router mode may serve more models than this)
# Fields of a chat body the server does not need back once the prompt is made
# (the completion fields are read from what remains).
CHAT_ONLY_FIELDS = ("messages", "tools")


@dataclass(frozen=True)
class ModelKey:
    """What a model's tokenizer and template depend on: its GGUF and --chat-template."""

    path: str
    chat_template: str | None = None


@dataclass
class ChildConfig:
    """Server settings the preparation needs, fixed for the life of the process."""

    reasoning: ReasoningConfig
    chat_template_kwargs: dict[str, Any]
    limits: Any  # asgi.params.RequestLimits
    system_prompt: str = ""
    nice: int = 10  # added to the process's nice value (see serve)


@dataclass
class Job:
    kind: str  # "tokenize" | "apply-template" | "chat" | "completion" | "load" (read a vocabulary ahead of use)
    default: ModelKey  # the model a body without (or with an unknown) "model" field means
    keys: dict[str, ModelKey] = field(default_factory=dict)  # model names and aliases (several models)
    fits: dict[ModelKey, tuple[int, int]] = field(default_factory=dict)  # loaded models: n_ctx, longest piece


@dataclass
class Reply:
    """A job's outcome: `error` (status, type, message, extra fields) or the results."""

    model: Any = None  # the body's "model" field, for the server to resolve as it always does
    key: ModelKey | None = None  # the vocabulary the job used
    error: tuple[int, str, str, dict[str, Any]] | None = None
    payload: bytes = b""  # a whole answer's JSON text (/tokenize, /apply-template)
    body: dict[str, Any] = field(default_factory=dict)  # chat: the body without CHAT_ONLY_FIELDS
    fields: dict[str, Any] = field(default_factory=dict)  # chat: completion fields (render_chat)
    prompt: Any = None  # chat: the ChatPrompt without its text (never needed after tokenizing)
    tokens: bytes = b""  # chat: the prompt's token ids, array("i") bytes
    prompts: list[bytes] | None = None  # completion: each prompt's token ids (None: no "prompt" field)
    prompt_error: tuple[int, str, str, dict[str, Any]] | None = None  # completion: raised after the params' checks


class Vocabularies:
    """Tokenizers and chat templates by model, read from GGUF metadata, least recently used dropped."""

    def __init__(self) -> None:
        self.loaded: OrderedDict[ModelKey, tuple[Any, ChatTemplate]] = OrderedDict()

    def get(self, key: ModelKey) -> tuple[Any, ChatTemplate]:
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        from pyllama.gguf_file import read_gguf
        from pyllama.tokenizer import Tokenizer

        gguf = read_gguf(key.path)
        tok = Tokenizer.from_gguf(gguf)
        tpl = gguf.metadata.get("tokenizer.chat_template")
        entry = (tok, template_for(tpl if isinstance(tpl, str) else None, gguf.metadata, tok, key.chat_template))
        self.loaded[key] = entry
        while len(self.loaded) > MAX_MODELS:
            self.loaded.popitem(last=False)
        return entry


def run_job(job: Job, raw: bytes, vocabs: Vocabularies, config: ChildConfig) -> Reply:
    if job.kind == "load":
        vocabs.get(job.default)
        return Reply(key=job.default)
    if not raw.strip():
        raise BadRequest("request body is empty: expected a JSON object")
    body = parse_json(raw)
    check_depth(body)
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(body).__name__}")
    name = body.get("model")
    key = job.keys.get(name, job.default) if isinstance(name, str) else job.default
    reply = Reply(model=name, key=key)
    tok, template = vocabs.get(key)
    n_ctx, max_piece = job.fits.get(key, (0, 0))

    def fits(text: str) -> None:
        if n_ctx > 0:
            check_text_fits(text, n_ctx, max_piece)

    if job.kind == "tokenize":
        reply.payload = tokenize_job(tok, body)[1]().encode("utf-8")
    elif job.kind == "apply-template":
        prompt, _ = render_chat(template, config.reasoning, config.chat_template_kwargs, body)
        reply.payload = dumps({"prompt": prompt.prompt}).encode("utf-8")
    elif job.kind == "chat":
        check_last_message_fits(fits, body.get("messages"))
        prompt, fields = render_chat(template, config.reasoning, config.chat_template_kwargs, body)
        fits(prompt.prompt)
        reply.tokens = array.array("i", tok.tokenize(prompt.prompt, True, True)).tobytes()
        reply.prompt = dataclasses.replace(prompt, prompt="")
        reply.fields = {k: v for k, v in fields.items() if k not in CHAT_ONLY_FIELDS}
        reply.body = {k: v for k, v in body.items() if k not in CHAT_ONLY_FIELDS}
    elif job.kind == "completion":  # the server reads the parameters first, so a prompt's error waits
        reply.body = {k: v for k, v in body.items() if k != "prompt"}
        if "prompt" in body:
            try:
                run = completion_prompts(tok, body["prompt"], config.limits, config.system_prompt, fits)
                reply.prompts = [array.array("i", p).tobytes() for p in run()]
            except Exception as exc:
                reply.prompts, reply.prompt_error = [], _failure(exc)
    else:
        raise ValueError(f"unknown preparation job {job.kind!r}")
    return reply


def _failure(exc: Exception) -> tuple[int, str, str, dict[str, Any]]:
    """The answer an error gets, as the server's error handlers would give it in-process."""
    if isinstance(exc, ApiError):
        return exc.status, exc.type, exc.message, dict(exc.extra)
    if isinstance(exc, InvalidRequestError):
        kind = "exceed_context_size_error" if isinstance(exc, ContextFullError) else "invalid_request_error"
        return 400, kind, str(exc), {}
    if isinstance(exc, PyllamaError):
        return 500, "server_error", str(exc), {}
    log.exception("request preparation failed")  # the log keeps the traceback, the answer says nothing inside
    return 500, "server_error", "Internal Server Error", {}


def serve(conn: Connection, config: ChildConfig) -> None:
    """The process's main loop (multiprocessing target): one job after another until told
    to stop or until the server's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops this process
    # A lower CPU priority than the model thread's: on a busy machine a large body's
    # preparation takes the cores the generation leaves, not the generation's. (Unlike a
    # worker thread, this process holds no lock the server waits for, so it is safe.)
    with contextlib.suppress(OSError):
        os.nice(config.nice)
    logging.basicConfig(level=logging.WARNING, format="prep: %(levelname)s %(message)s")
    vocabs = Vocabularies()
    while True:
        try:
            job = pickle.loads(conn.recv_bytes())
            if job is None:
                return
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply = run_job(job, raw, vocabs, config)
        except RecursionError:
            reply = Reply(error=(400, "invalid_request_error", "the request is nested too deeply to prepare", {}))
        except Exception as exc:
            reply = Reply(error=_failure(exc))
        del raw
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            return
