"""Tokenizer and template utilities: /tokenize, /detokenize, /apply-template."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from asgi.chat_request import chat_prompt
from asgi.errors import BadRequest
from asgi.http import dumps, json_response, json_text_response, read_json
from asgi.prompts import check_token_ids, text_size, tokenize_mixed, tokenize_off_loop
from asgi.state import server_state

bp = Blueprint("tokens", __name__)


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"Field '{name}': type must be boolean")
    return value


def _piece_json(piece: bytes) -> str | list[int]:
    """A piece as text when it is whole UTF-8, else as its byte values (llama-server)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


@bp.post("/tokenize")
async def tokenize() -> Response:
    body = await read_json()
    served = await server_state().registry.get(body.get("model"))
    tok = served.tokenizer
    if "content" not in body:
        return json_response({"tokens": []})
    content = body["content"]
    add_special = _flag(body, "add_special", False)
    parse_special = _flag(body, "parse_special", True)
    with_pieces = _flag(body, "with_pieces", False)
    if not isinstance(content, str | list):
        raise BadRequest("Field 'content': must be a string or an array of strings and token ids")
    def run() -> str:
        tokens = tokenize_mixed(tok, content, add_special, parse_special)
        if not with_pieces:
            return dumps({"tokens": tokens})
        return dumps({"tokens": [{"id": t, "piece": _piece_json(tok.token_to_piece(t, True))} for t in tokens]})

    size = text_size(content) + (len(content) if isinstance(content, list) else 0)
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
    body = await read_json()
    served = await server_state().registry.get(body.get("model"))
    size = request.content_length or 0

    def run() -> str:
        prompt, _ = chat_prompt(served, body)
        return dumps({"prompt": prompt.prompt})

    return json_text_response(await tokenize_off_loop(size, run))
