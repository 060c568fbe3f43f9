"""Embeddings: /embedding and /embeddings (llama.cpp shape) and OpenAI's /v1/embeddings."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from quart import Blueprint, Response

from asgi.completion_request import check_context
from asgi.errors import BadRequest, NotSupported
from asgi.generate import run_all
from asgi.http import guarded, json_response, read_json
from asgi.pooled_request import embedding_fields
from asgi.prep_process import prepare_in_child, reply_token_lists
from asgi.prompts import check_token_ids, text_size, tokenize_off_loop, tokenize_prompts
from asgi.registry import ServedModel
from asgi.responses import input_only_list
from asgi.state import server_state

bp = Blueprint("embeddings", __name__)

# GGUF `{arch}.pooling_type` values (llama_pooling_type).
GGUF_POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


def pooling_of(served: ServedModel) -> str:
    """--pooling, else the model's own pooling, else mean (a generative model has none)."""
    if served.spec.pooling:
        return served.spec.pooling
    assert served.model is not None
    value = served.model.metadata.get(f"{served.model.config.arch}.pooling_type")
    return GGUF_POOLING.get(int(value), "mean") if isinstance(value, int) else "mean"


async def _prompts(served: ServedModel, body: dict[str, Any]) -> tuple[list[list[int]], dict[str, Any]]:
    raw, fields = embedding_fields(body, server_state().settings.limits)
    return await tokenize_off_loop(text_size(raw), tokenize_prompts, served.tokenizer, raw), fields


async def embed(oai: bool) -> Response:
    prepared = await prepare_in_child("embeddings")  # a large body: read and tokenized in the child
    if prepared is not None:
        reply, served = prepared
        body = reply.body
    else:
        body = await read_json()
        served = await server_state().registry.get(body.get("model"))
    if not served.spec.embeddings:
        raise NotSupported("This server does not support embeddings. Start it with `--embeddings`")
    pooling = pooling_of(served)
    if oai and pooling == "none":
        raise BadRequest("Pooling type 'none' is not OAI compatible. Please use a different pooling type")
    if prepared is not None:
        prompts, fields = reply_token_lists(prepared[0]) or [], prepared[0].fields
    else:
        prompts, fields = await _prompts(served, body)
    oai = oai and not fields["content"]  # "content" is the llama.cpp field: reply in its shape
    use_base64, normalize = fields["base64"], fields["normalize"]
    assert served.model is not None
    for tokens in prompts:
        if not tokens:
            raise BadRequest("Input content cannot be empty")
        check_token_ids(tokens, served.model.n_vocab)
    from pyllama.tasks import Task

    check_context(prompts, served.model.n_ctx_seq, generating=False)

    tasks = [Task(prompt=t, kind="embedding", pooling=pooling, normalize=normalize if pooling != "none" else -1)
             for t in prompts]
    served.admit(len(tasks))
    finals = await guarded(run_all(served, tasks))
    if not oai:
        return json_response([{"index": i, "embedding": f.embedding} for i, f in enumerate(finals)])
    data: list[dict[str, Any]] = []
    for i, f in enumerate(finals):
        vector = f.embedding[0]
        if use_base64:
            encoded = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            data.append({"embedding": encoded, "index": i, "object": "embedding", "encoding_format": "base64"})
        else:
            data.append({"embedding": vector, "index": i, "object": "embedding"})
    n_tokens = sum(f.n_prompt for f in finals)
    model_name = body["model"] if isinstance(body.get("model"), str) else served.name
    return json_response(input_only_list(model_name, n_tokens, "data", data))


@bp.post("/embedding")
@bp.post("/embeddings")
async def embeddings_native() -> Response:
    return await embed(oai=False)


@bp.post("/v1/embeddings")
async def embeddings_oai() -> Response:
    return await embed(oai=True)
