"""Text completion: /completion (/completions), OpenAI's /v1/completions, and /infill."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from asgi.completion_request import detok, make_tasks, prompt_tokens, read_params, verbose_body, wants_verbose
from asgi.errors import BadRequest
from asgi.generate import Tagged, claim_stream, run_all, sse_events, stream_all
from asgi.http import SSE_DONE, guarded, json_response, read_json, sse_event, sse_response
from asgi.params import CompletionParams
from asgi.prep_process import prepare_in_child, reply_prompts, reply_token_lists
from asgi.prompts import (
    assemble_infill,
    infill_checks,
    infill_parts,
    text_size,
    tokenize_mixed,
    tokenize_off_loop,
)
from asgi.registry import ServedModel
from asgi.responses import (
    completion_final,
    completion_partial,
    finish_reason,
    oai_completion,
    oai_text_choice,
    random_id,
    usage,
)
from asgi.state import server_state

bp = Blueprint("completions", __name__)


async def native_completion(served: ServedModel, params: CompletionParams, prompts: list[list[int]]) -> Response:
    """The llama.cpp-native result: one object, or a list for several prompts; or an SSE stream."""
    assert served.model is not None
    tasks = make_tasks(served, prompts, params)
    texts = [detok(served, t.prompt) for t in tasks]
    settings = params.generation_settings(served.model.n_ctx_seq, served.name)
    if not params.stream:
        served.admit(len(tasks))
        finals = await guarded(run_all(served, tasks))
        bodies = [
            completion_final(f, index=i, model=served.name, prompt=texts[i], settings=settings, stream=False,
                             return_tokens=params.return_tokens, response_fields=params.response_fields)
            for i, f in enumerate(finals)
        ]
        return json_response(bodies[0] if len(bodies) == 1 else bodies)

    decoded = [0] * len(tasks)

    def render(item: Tagged) -> list[str]:
        from pyllama.tasks import Final

        event = item.event
        if isinstance(event, Final):
            body = completion_final(event, index=item.index, model=served.name, prompt=texts[item.index],
                                    settings=settings, stream=True, return_tokens=params.return_tokens,
                                    response_fields=params.response_fields, content=event.tail)
            return [sse_event(body)]
        decoded[item.index] += len(event.tokens)
        return [sse_event(completion_partial(event, index=item.index, slot_id=-1, n_decoded=decoded[item.index],
                                             n_prompt=len(tasks[item.index].prompt),
                                             timings_per_token=params.timings_per_token))]

    served.admit(len(tasks))
    first, rest = await guarded(stream_all(served, tasks))
    return sse_response(sse_events(first, rest, render, None), None)


@bp.post("/completion")
@bp.post("/completions")
async def completion() -> Response:
    prepared = await prepare_in_child("completion")  # a large body: parsed and tokenized in the child
    if prepared is not None:
        reply, served = prepared
        claim_stream(reply.body)
        params = await tokenize_off_loop(request.content_length or 0, read_params, served, reply.body)
        assert served.model is not None
        prompts = reply_prompts(reply, served.model.n_vocab)
        if prompts is None:
            raise BadRequest('"prompt" is required')
        return await native_completion(served, params, prompts)
    body = await read_json()
    claim_stream(body)  # X-Conversation-Id: resumable from here on (asgi.streams)
    served = await server_state().registry.get(body.get("model"))
    params = await tokenize_off_loop(request.content_length or 0, read_params, served, body)
    if "prompt" not in body:
        raise BadRequest('"prompt" is required')
    return await native_completion(served, params, await prompt_tokens(served, body["prompt"]))


def _check_oai_fields(body: dict[str, Any], has_prompt: bool) -> None:
    claim_stream(body)  # X-Conversation-Id: resumable from here on (asgi.streams)
    if not has_prompt:
        raise BadRequest('"prompt" is required')
    if body.get("echo"):
        raise BadRequest("Only no echo is supported")
    for name in ("best_of", "suffix"):
        if body.get(name) is not None:
            raise BadRequest(f"Unsupported param: {name}")


@bp.post("/v1/completions")
async def oai_completions() -> Response:
    prepared = await prepare_in_child("completion")  # a large body: parsed and tokenized in the child
    if prepared is not None:
        reply, served = prepared
        body = reply.body
        _check_oai_fields(body, reply.prompts is not None)
        params = await tokenize_off_loop(request.content_length or 0, read_params, served, body)
        assert served.model is not None
        prompts = reply_prompts(reply, served.model.n_vocab)
        assert prompts is not None
    else:
        body = await read_json()
        _check_oai_fields(body, "prompt" in body)
        served = await server_state().registry.get(body.get("model"))
        params = await tokenize_off_loop(request.content_length or 0, read_params, served, body)
        prompts = await prompt_tokens(served, body["prompt"])
    tasks = make_tasks(served, prompts, params)
    cmpl_id = random_id("cmpl-")
    for task in tasks:
        task.cmpl_id = cmpl_id  # as llama-server, any completion's id is one POST /v1/chat/completions/control finds
    model_name = body["model"] if isinstance(body.get("model"), str) else served.name
    if not params.stream:
        served.admit(len(tasks))
        finals = await guarded(run_all(served, tasks))
        choices = [oai_text_choice(f.content, i, finish_reason(f), f.probs) for i, f in enumerate(finals)]
        total = usage(sum(f.n_prompt for f in finals), sum(f.n_decoded for f in finals),
                      sum(f.n_cached for f in finals))
        answer = oai_completion(cmpl_id, model_name, choices, total, finals[0].timings)
        if wants_verbose(body):
            answer["__verbose"] = verbose_body(served, params, finals[0], tasks[0].prompt)
        return json_response(answer)

    verbose = wants_verbose(body)

    def render(item: Tagged) -> list[str]:
        from pyllama.tasks import Final

        event = item.event
        if isinstance(event, Final):
            choice = oai_text_choice(event.tail, item.index, finish_reason(event), None)
            body_final = oai_completion(cmpl_id, model_name, [choice],
                                        usage(event.n_prompt, event.n_decoded, event.n_cached), event.timings)
            if verbose:  # llama-server adds the native result to the final chunk too
                body_final["__verbose"] = verbose_body(served, params, event, tasks[item.index].prompt)
            return [sse_event(body_final)]
        if event.progress is not None:
            return []  # OpenAI text completions have no progress chunk
        choice = oai_text_choice(event.text, item.index, None, event.probs)
        return [sse_event(oai_completion(cmpl_id, model_name, [choice], None))]

    served.admit(len(tasks))
    first, rest = await guarded(stream_all(served, tasks))
    return sse_response(sse_events(first, rest, render, SSE_DONE), SSE_DONE)


@bp.post("/infill")
async def infill() -> Response:
    prepared = await prepare_in_child("infill")  # a large body: checked and tokenized in the child
    if prepared is not None:
        reply, served = prepared
        body = reply.body
        claim_stream(body)
        params = await tokenize_off_loop(request.content_length or 0, read_params, served, body)
        lists = reply_token_lists(reply)
        assert lists is not None
        prompt, parts = lists[0], (lists[1], lists[2], lists[3])
    else:
        body = await read_json()
        claim_stream(body)  # X-Conversation-Id: resumable from here on (asgi.streams)
        served = await server_state().registry.get(body.get("model"))
        extra = infill_checks(served.tokenizer, body)
        params = read_params(served, body)
        prompt = tokenize_mixed(served.tokenizer, body.get("prompt", ""), False, True)
        size = text_size([body["input_prefix"], body["input_suffix"], *(c["text"] for c in extra)])
        parts = await tokenize_off_loop(size, infill_parts, served.tokenizer, body["input_prefix"],
                                        body["input_suffix"], extra)
    assert served.model is not None
    tokens = assemble_infill(served.tokenizer, parts, prompt, n_batch=served.spec.n_batch,
                             n_predict=params.n_predict, n_ctx=served.model.n_ctx_seq)
    return await native_completion(served, params, [tokens])
