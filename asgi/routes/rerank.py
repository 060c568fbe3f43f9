"""Reranking: /rerank, /reranking, /v1/rerank, /v1/reranking (llama-server's handle_rerank).

Each document is scored against the query by the model's classifier head (pooling
`rank`): the input is the GGUF's `rerank` chat template with {query} and {document}
filled in, else BOS query EOS SEP document EOS as the vocabulary asks (format_prompt_rerank).
Two request shapes, as llama-server: Jina/Cohere (`query`, `documents`, `top_n`) answered
with `{results: [{index, relevance_score}], usage}`, and TEI (`query`, `texts`,
`return_text`) answered with a bare list of `{index, score, text?}`.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from asgi.completion_request import check_context
from asgi.errors import BadRequest, NotSupported
from asgi.generate import run_all
from asgi.http import guarded, json_response, read_json
from asgi.pooled_request import RERANK_TEMPLATE_KEY, rerank_fields, rerank_tokens
from asgi.prep_process import prepare_in_child, reply_token_lists
from asgi.prompts import check_token_ids, text_size, tokenize_off_loop
from asgi.responses import input_only_list
from asgi.state import server_state

bp = Blueprint("rerank", __name__)

@bp.post("/rerank")
@bp.post("/reranking")
@bp.post("/v1/rerank")
@bp.post("/v1/reranking")
async def rerank() -> Response:
    prepared = await prepare_in_child("rerank")  # a large body: read and tokenized in the child
    if prepared is not None:
        reply, served = prepared
        body = reply.body
    else:
        body = await read_json()
        served = await server_state().registry.get(body.get("model"))
    if not served.spec.embeddings or served.spec.pooling != "rank":
        raise NotSupported("This server does not support reranking. Start it with `--reranking`")
    assert served.model is not None
    if prepared is not None:
        prompts, fields = reply_token_lists(prepared[0]) or [], prepared[0].fields
        documents: list[str] = fields.get("documents") or []
    else:
        query, documents, fields = rerank_fields(body, server_state().settings.limits)
        template = served.model.metadata.get(RERANK_TEMPLATE_KEY)
        size = len(query) * len(documents) + text_size(documents)
        prompts = await tokenize_off_loop(
            size, lambda: [rerank_tokens(served.tokenizer, template, query, d) for d in documents])
    tei, top_n = fields["tei"], fields["top_n"]
    for tokens in prompts:
        if not tokens:
            raise BadRequest("Input content cannot be empty")
        check_token_ids(tokens, served.model.n_vocab)
    check_context(prompts, served.model.n_ctx_seq, generating=False)
    from pyllama.tasks import Task

    tasks = [Task(prompt=t, kind="embedding", pooling="rank", normalize=-1) for t in prompts]
    served.admit(len(tasks))
    finals = await guarded(run_all(served, tasks))
    label = "score" if tei else "relevance_score"
    return_text = tei and body.get("return_text") is True
    elements: list[dict[str, Any]] = []
    for i, f in enumerate(finals):
        elem: dict[str, Any] = {"index": i, label: f.embedding[0][0]}
        if return_text:
            elem["text"] = documents[i]
        elements.append(elem)
    elements.sort(key=lambda e: -float(e[label]))  # stable: equal scores keep document order
    results = elements[:top_n]
    if tei:
        return json_response(results)
    n_tokens = sum(f.n_prompt for f in finals)
    model_name = body["model"] if isinstance(body.get("model"), str) else served.name
    return json_response(input_only_list(model_name, n_tokens, "results", results))
