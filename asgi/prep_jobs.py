"""The preparation process's jobs (asgi/prep_child.py runs them): a large body parsed,
converted, templated and tokenized with the very functions the routes run in-process
(asgi.json_text, asgi.chat_render, asgi.prompts, asgi.pooled_request), so both paths
give the same answers and the same errors.

Where a route checks things about the served model (embeddings enabled, the pooling type)
before the body's own checks, the job keeps the body's first error in `prompt_error`
and the server raises it after its own checks: the order of errors is the in-process one.
"""

from __future__ import annotations

import array
import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgi.chat_render import CHAT_SHAPES, check_last_message_fits, render_chat, template_for
from asgi.errors import BadRequest
from asgi.json_text import check_depth, dumps, parse_json
from asgi.pooled_request import RERANK_TEMPLATE_KEY, embedding_fields, rerank_fields, rerank_tokens
from asgi.prep_protocol import ChildConfig, Job, ModelKey, Reply, failure
from asgi.prompts import (
    check_text_fits,
    completion_prompts,
    infill_checks,
    infill_parts,
    tokenize_job,
    tokenize_mixed,
    tokenize_prompts,
)
from pyllama.chat import ChatTemplate

MAX_MODELS = 4  # vocabularies kept loaded (router mode may serve more models than this)
# Fields of a chat body the server does not need back once the prompt is made
# (the completion fields are read from what remains).
CHAT_ONLY_FIELDS = ("messages", "tools")


@dataclass
class Vocab:
    """What a model's preparation needs from its GGUF: no weights."""

    tokenizer: Any
    template: ChatTemplate
    rerank_template: Any  # the GGUF's RERANK_TEMPLATE_KEY (None: the BOS/EOS/SEP format)


class Vocabularies:
    """Tokenizers and chat templates by model, read from GGUF metadata, least recently used dropped."""

    def __init__(self) -> None:
        self.loaded: OrderedDict[ModelKey, Vocab] = OrderedDict()

    def get(self, key: ModelKey) -> Vocab:
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        from pyllama.gguf_file import read_gguf
        from pyllama.tokenizer import Tokenizer

        gguf = read_gguf(key.path)
        tok = Tokenizer.from_gguf(gguf)
        tpl = gguf.metadata.get("tokenizer.chat_template")
        template = template_for(tpl if isinstance(tpl, str) else None, gguf.metadata, tok, key.chat_template)
        entry = Vocab(tok, template, gguf.metadata.get(RERANK_TEMPLATE_KEY))
        self.loaded[key] = entry
        while len(self.loaded) > MAX_MODELS:
            self.loaded.popitem(last=False)
        return entry


def _ids(tokens: list[int]) -> bytes:
    return array.array("i", tokens).tobytes()


def _deferred(reply: Reply, run: Callable[[], list[list[int]]]) -> None:
    """reply.prompts from run(), or its error kept for the server to raise after its own checks."""
    try:
        reply.prompts = [_ids(p) for p in run()]
    except Exception as exc:
        reply.prompts, reply.prompt_error = [], failure(exc)


def _chat(job: Job, body: dict[str, Any], vocab: Vocab, config: ChildConfig, reply: Reply,
          fits: Callable[[str], None]) -> None:
    shape, _, count = job.kind.partition("-")
    chat, reply.aside = CHAT_SHAPES[shape](body)
    if not count:  # a token count (/v1/messages/count_tokens, .../input_tokens) checks no context
        check_last_message_fits(fits, chat.get("messages"))
    prompt, fields = render_chat(vocab.template, config.reasoning, config.chat_template_kwargs, chat)
    if not count:
        fits(prompt.prompt)
    reply.tokens = _ids(vocab.tokenizer.tokenize(prompt.prompt, True, True))
    reply.prompt = dataclasses.replace(prompt, prompt="")
    reply.fields = {k: v for k, v in fields.items() if k not in CHAT_ONLY_FIELDS}
    reply.body = {k: v for k, v in chat.items() if k not in CHAT_ONLY_FIELDS}


def _infill(body: dict[str, Any], vocab: Vocab, reply: Reply) -> None:
    """The body's checks now; its tokens (prompt, prefix, suffix, extra context) deferred:
    in-process the parameters are read (and refused) between the two."""
    tok = vocab.tokenizer
    extra = infill_checks(tok, body)
    reply.body = {k: v for k, v in body.items() if k not in ("prompt", "input_prefix", "input_suffix", "input_extra")}
    _deferred(reply, lambda: [tokenize_mixed(tok, body.get("prompt", ""), False, True),
                              *infill_parts(tok, body["input_prefix"], body["input_suffix"], extra)])


def _embeddings(body: dict[str, Any], vocab: Vocab, config: ChildConfig, reply: Reply) -> None:
    reply.body = {k: v for k, v in body.items() if k not in ("input", "content")}

    def run() -> list[list[int]]:
        raw, reply.fields = embedding_fields(body, config.limits)
        return tokenize_prompts(vocab.tokenizer, raw)

    _deferred(reply, run)


def _rerank(body: dict[str, Any], vocab: Vocab, config: ChildConfig, reply: Reply) -> None:
    reply.body = {k: v for k, v in body.items() if k not in ("query", "documents", "texts")}

    def run() -> list[list[int]]:
        query, documents, reply.fields = rerank_fields(body, config.limits)
        if reply.fields["tei"] and body.get("return_text") is True:
            reply.fields["documents"] = documents  # the answer quotes them
        return [rerank_tokens(vocab.tokenizer, vocab.rerank_template, query, d) for d in documents]

    _deferred(reply, run)


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
    vocab = vocabs.get(key)
    tok = vocab.tokenizer
    n_ctx, max_piece = job.fits.get(key, (0, 0))

    def fits(text: str) -> None:
        if n_ctx > 0:
            check_text_fits(text, n_ctx, max_piece)

    if job.kind == "tokenize":
        reply.payload = tokenize_job(tok, body)[1]().encode("utf-8")
    elif job.kind == "apply-template":
        prompt, _ = render_chat(vocab.template, config.reasoning, config.chat_template_kwargs, body)
        reply.payload = dumps({"prompt": prompt.prompt}).encode("utf-8")
    elif job.kind.partition("-")[0] in CHAT_SHAPES:
        _chat(job, body, vocab, config, reply, fits)
    elif job.kind == "completion":  # the server reads the parameters first, so a prompt's error waits
        reply.body = {k: v for k, v in body.items() if k != "prompt"}
        if "prompt" in body:
            _deferred(reply, lambda: completion_prompts(tok, body["prompt"], config.limits, config.system_prompt, fits)())
    elif job.kind == "infill":
        _infill(body, vocab, reply)
    elif job.kind == "embeddings":
        _embeddings(body, vocab, config, reply)
    elif job.kind == "rerank":
        _rerank(body, vocab, config, reply)
    else:
        raise ValueError(f"unknown preparation job {job.kind!r}")
    return reply
