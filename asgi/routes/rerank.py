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
from asgi.params import check_prompt_count
from asgi.prompts import check_token_ids, text_size, tokenize_off_loop
from asgi.registry import ServedModel
from asgi.responses import input_only_list
from asgi.state import server_state

bp = Blueprint("rerank", __name__)

RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"


def rerank_tokens(served: ServedModel, query: str, document: str) -> list[int]:
    """format_prompt_rerank: the model's `rerank` template, else BOS query EOS SEP doc EOS."""
    assert served.model is not None
    tok = served.tokenizer
    template = served.model.metadata.get(RERANK_TEMPLATE_KEY)
    if isinstance(template, str):
        prompt = template.replace("{query}", query).replace("{document}", document)
        return tok.tokenize(prompt, add_special=False, parse_special=True)
    eos = tok.eos_id if tok.eos_id is not None else tok.sep_id
    out: list[int] = []
    if tok.add_bos and tok.bos_id is not None:
        out.append(tok.bos_id)
    out += tok.tokenize(query, add_special=False, parse_special=False)
    if tok.add_eos and eos is not None:
        out.append(eos)
    if tok.add_sep and tok.sep_id is not None:
        out.append(tok.sep_id)
    out += tok.tokenize(document, add_special=False, parse_special=False)
    if tok.add_eos and eos is not None:
        out.append(eos)
    return out


def _documents(body: dict[str, Any]) -> list[str]:
    """`documents`, else `texts` (llama-server's json_value: a value of the wrong type counts as absent)."""
    for key in ("documents", "texts"):
        value = body.get(key)
        if isinstance(value, list) and all(isinstance(d, str) for d in value):
            return value
    return []


def _top_n(body: dict[str, Any], default: int) -> int:
    value = body.get("top_n")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    if value < 0:
        raise BadRequest('"top_n" must be a non-negative integer')
    return int(value)


@bp.post("/rerank")
@bp.post("/reranking")
@bp.post("/v1/rerank")
@bp.post("/v1/reranking")
async def rerank() -> Response:
    body = await read_json()
    served = await server_state().registry.get(body.get("model"))
    if not served.spec.embeddings or served.spec.pooling != "rank":
        raise NotSupported("This server does not support reranking. Start it with `--reranking`")
    tei = "texts" in body
    if "query" not in body:
        raise BadRequest('"query" must be provided')
    query = body["query"]
    if not isinstance(query, str):
        raise BadRequest('"query" must be a string')
    documents = _documents(body)
    if not documents:
        raise BadRequest('"documents" must be a non-empty string array')
    top_n = _top_n(body, len(documents))
    check_prompt_count(documents, server_state().settings.limits, "documents")
    assert served.model is not None
    size = len(query) * len(documents) + text_size(documents)
    prompts = await tokenize_off_loop(size, lambda: [rerank_tokens(served, query, d) for d in documents])
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
