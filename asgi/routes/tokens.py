"""Tokenizer and template utilities: /tokenize, /detokenize, /apply-template."""

from __future__ import annotations

from quart import Blueprint, Response, request

from asgi.chat_request import chat_prompt
from asgi.errors import BadRequest
from asgi.http import dumps, json_response, json_text_response, read_json
from asgi.prep_process import prepare_in_child
from asgi.prompts import check_token_ids, tokenize_job, tokenize_off_loop
from asgi.state import server_state

bp = Blueprint("tokens", __name__)


@bp.post("/tokenize")
async def tokenize() -> Response:
    prepared = await prepare_in_child("tokenize")
    if prepared is not None:
        return json_text_response(prepared[0].payload)
    body = await read_json()
    served = await server_state().registry.get(body.get("model"))
    size, run = tokenize_job(served.tokenizer, body)
    return json_text_response(await tokenize_off_loop(size, run))


@bp.post("/detokenize")
async def detokenize() -> Response:
    body = await read_json()
    served = await server_state().registry.get(body.get("model"))
    tokens = body.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise BadRequest("Field 'tokens': must be an array of integer token ids")
    assert served.model is not None
    check_token_ids(tokens, served.model.n_vocab)
    tok = served.tokenizer

    def run() -> str:
        return b"".join(tok.token_to_piece(t, True) for t in tokens).decode("utf-8", errors="replace")

    return json_response({"content": await tokenize_off_loop(len(tokens) * 8, run)})


@bp.post("/apply-template")
async def apply_template() -> Response:
    prepared = await prepare_in_child("apply-template")
    if prepared is not None:
        return json_text_response(prepared[0].payload)
    body = await read_json()
    served = await server_state().registry.get(body.get("model"))
    size = request.content_length or 0

    def run() -> str:
        prompt, _ = chat_prompt(served, body)
        return dumps({"prompt": prompt.prompt})

    return json_text_response(await tokenize_off_loop(size, run))
