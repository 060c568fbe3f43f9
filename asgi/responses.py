"""Response bodies in llama-server's exact shapes (server-task.cpp `to_json_*`).

Three families: the native /completion shape (`content`, `stop`, `timings`, ...), the
OpenAI text completion shape (`choices[].text`, `object: text_completion`) and the
OpenAI chat shape (`choices[].message` or streamed `choices[].delta` chunks). Builders
take the scheduler's Partial/Final events and return plain dicts.
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from pyllama import __version__

BUILD_INFO = f"b1-pyllama-{__version__}"
_ALPHABET = string.digits + string.ascii_letters


def random_id(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(32))


def probs_json(probs: list[Any]) -> list[dict[str, Any]]:
    return [p.to_json() for p in probs]


def nested_fields(paths: list[str], data: dict[str, Any]) -> dict[str, Any]:
    """`response_fields`: keep only these paths; "a/b" moves data["a"]["b"] to the key "a/b"."""
    out: dict[str, Any] = {}
    for path in paths:
        current: Any = data
        for key in path.split("/"):
            if isinstance(current, dict) and key in current:
                current = current[key]
            else:
                break
        else:
            out[path] = current
    return out


def completion_final(
    final: Any, *, index: int, model: str, prompt: str, settings: dict[str, Any], stream: bool,
    return_tokens: bool, response_fields: list[str], content: str | None = None,
) -> dict[str, Any]:
    """The native /completion result (to_json_non_oaicompat)."""
    text = final.content if content is None else content
    body: dict[str, Any] = {
        "index": index,
        "content": text,
        "tokens": list(final.tokens) if return_tokens else [],
        "id_slot": final.slot_id,
        "stop": True,
        "model": model,
        "generation_settings": settings,
        "prompt": prompt,
        "has_new_line": "\n" in final.content,
        **final.result_fields(),
    }
    if not stream and final.probs:
        body["completion_probabilities"] = probs_json(final.probs)
    return nested_fields(response_fields, body) if response_fields else body


def completion_partial(event: Any, *, index: int, slot_id: int, n_decoded: int, n_prompt: int,
                       timings_per_token: bool = False) -> dict[str, Any]:
    """One streamed chunk: like llama-server, it always carries the ids of its tokens.

    `id_slot` is what the caller passes: llama-server leaves it at -1 in partial results
    (send_partial_response never sets it), even though the event knows its slot. With
    `timings_per_token` the chunk carries the task's running `timings`, as llama-server's do.
    """
    body: dict[str, Any] = {
        "index": index,
        "content": event.text,
        "tokens": list(event.tokens),
        "stop": False,
        "id_slot": slot_id,
        "tokens_predicted": n_decoded,
        "tokens_evaluated": n_prompt,
    }
    progress = getattr(event, "progress", None)
    if progress is not None:
        body["prompt_progress"] = progress
    if (timings_per_token or progress is not None) and hasattr(event, "timings"):
        body["timings"] = event.timings
    if event.probs:
        body["completion_probabilities"] = probs_json(event.probs)
    return body


def finish_reason(final: Any, has_tool_calls: bool = False) -> str:
    if final.stop_type in ("word", "eos"):
        return "tool_calls" if has_tool_calls else "stop"
    return "length"


def input_only_list(model: str, n_tokens: int, key: str, items: list[Any]) -> dict[str, Any]:
    """The list answer of the routes that only read their input (/v1/embeddings: `data`,
    /rerank: `results`), with llama-server's prompt-only usage."""
    return {
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        key: items,
    }


def usage(n_prompt: int, n_decoded: int, n_cached: int) -> dict[str, Any]:
    return {
        "completion_tokens": n_decoded,
        "prompt_tokens": n_prompt,
        "total_tokens": n_prompt + n_decoded,
        "prompt_tokens_details": {"cached_tokens": n_cached},
    }


def oai_completion(cmpl_id: str, model: str, choices: list[dict[str, Any]], usage_body: dict[str, Any] | None,
                   timings: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": choices,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": BUILD_INFO,
        "object": "text_completion",
        "id": cmpl_id,
    }
    if usage_body is not None:
        body["usage"] = usage_body
    if timings is not None:
        body["timings"] = timings
    return body


def oai_text_choice(text: str, index: int, reason: str | None, probs: list[Any] | None) -> dict[str, Any]:
    return {
        "text": text,
        "index": index,
        "logprobs": {"content": probs_json(probs)} if probs else None,
        "finish_reason": reason,
    }


def chat_message(content: str, tool_calls: list[Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if (tool_calls and not content) else content}
    if tool_calls:
        message["tool_calls"] = [c.to_openai() for c in tool_calls]
    return message


def oai_chat(cmpl_id: str, model: str, choices: list[dict[str, Any]], usage_body: dict[str, Any],
             timings: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": choices,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": BUILD_INFO,
        "object": "chat.completion",
        "usage": usage_body,
        "id": cmpl_id,
    }
    if timings is not None:
        body["timings"] = timings
    return body


def chat_chunk(cmpl_id: str, model: str, index: int, delta: dict[str, Any], reason: str | None = None,
               logprobs: list[Any] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"finish_reason": reason, "index": index, "delta": delta}
    if logprobs:
        choice["logprobs"] = {"content": probs_json(logprobs)}
    return {
        "choices": [choice],
        "created": int(time.time()),
        "id": cmpl_id,
        "model": model,
        "system_fingerprint": BUILD_INFO,
        "object": "chat.completion.chunk",
    }


def usage_chunk(cmpl_id: str, model: str, usage_body: dict[str, Any], timings: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": [],
        "created": int(time.time()),
        "id": cmpl_id,
        "model": model,
        "system_fingerprint": BUILD_INFO,
        "object": "chat.completion.chunk",
        "usage": usage_body,
    }
    if timings is not None:
        body["timings"] = timings
    return body


def tool_call_delta(index: int, call: Any) -> dict[str, Any]:
    return {
        "tool_calls": [
            {"index": index, "id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
        ]
    }
