"""Embedding and rerank bodies read without the model: the checks of /embeddings,
/v1/embeddings and /rerank that depend on the body alone, in the order the routes make
them, and rerank's prompt format. Free of Quart and of the loaded model, so that the
preparation process (asgi/prep_jobs.py) reads a large body exactly as the routes do.
"""

from __future__ import annotations

from typing import Any

from asgi.errors import BadRequest
from asgi.params import check_prompt_count

RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"


def embedding_fields(body: dict[str, Any], limits: Any) -> tuple[Any, dict[str, Any]]:
    """The body's input (`input`, else llama.cpp's `content`) and its options: `content`
    (the llama.cpp field was used: answer in its shape), `base64`, `normalize`."""
    content = False
    if "input" in body:
        raw = body["input"]
    elif "content" in body:
        raw, content = body["content"], True
    else:
        raise BadRequest('"input" or "content" must be provided')
    use_base64 = False
    if body.get("encoding_format") is not None:
        if body["encoding_format"] == "base64":
            use_base64 = True
        elif body["encoding_format"] != "float":
            raise BadRequest("The format to return the embeddings in. Can be either float or base64")
    normalize = 2
    if body.get("embd_normalize") is not None:
        value = body["embd_normalize"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest("Field 'embd_normalize': type must be number")
        normalize = value
    if isinstance(raw, list) and not raw:
        raise BadRequest('"input" must not be empty')
    check_prompt_count(raw, limits, "input")
    return raw, {"content": content, "base64": use_base64, "normalize": normalize}


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


def rerank_fields(body: dict[str, Any], limits: Any) -> tuple[str, list[str], dict[str, Any]]:
    """The query, the documents, and the answer's options: `tei` (the TEI shape), `top_n`."""
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
    check_prompt_count(documents, limits, "documents")
    return query, documents, {"tei": tei, "top_n": top_n}


def rerank_tokens(tok: Any, template: Any, query: str, document: str) -> list[int]:
    """format_prompt_rerank: the model's `rerank` template (GGUF metadata RERANK_TEMPLATE_KEY),
    else BOS query EOS SEP doc EOS."""
    if isinstance(template, str):
        prompt = template.replace("{query}", query).replace("{document}", document)
        return list(tok.tokenize(prompt, add_special=False, parse_special=True))
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
