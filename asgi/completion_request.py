"""A completion request made ready for the scheduler: its sampling fields read against the
served model, its prompts tokenized and checked against the context, its tasks built.

Shared by every generating route (/completion, /v1/completions, /infill, chat, and the
chat-shaped /v1/messages and /v1/responses), so routes need not import each other.
"""

from __future__ import annotations

from typing import Any

from asgi.errors import BadRequest, ContextExceeded
from asgi.lora_settings import lora_scales
from asgi.params import CompletionParams, copy_params, parse_completion_params
from asgi.prompts import check_token_ids, completion_prompts, text_size, tokenize_off_loop
from asgi.reasoning_budget import budget_spec, reasoning_control
from asgi.registry import ServedModel
from asgi.responses import completion_final
from asgi.state import server_state
from pyllama.tasks import Task


def read_params(served: ServedModel, body: dict[str, Any]) -> CompletionParams:
    assert served.model is not None
    if body.get("image_data") or body.get("multimodal_data"):
        raise BadRequest("image_data is not supported: this server runs text-only models (no multimodal projector)")
    tok = served.tokenizer
    params = parse_completion_params(
        body,
        defaults=server_state().settings.sampling,
        n_vocab=served.model.n_vocab,
        n_parallel=served.spec.n_parallel,
        tokenize=lambda text: tok.tokenize(text, False, False),
        limits=server_state().settings.limits,
    )
    if body.get("ignore_eos") is True:
        # llama-server bans the end-of-generation tokens with -inf biases, and lists them in
        # generation_settings.logit_bias (JSON null for -inf); the sampler bans them too
        params.sampling.logit_bias = [*params.sampling.logit_bias,
                                      *((t, float("-inf")) for t in sorted(tok.eog_ids))]
    if params.lora is not None:
        lora = served.model.lora
        lora_scales(params.lora, len(lora.adapters) if lora is not None else 0)  # unknown ids: 400 now
    params.sampling.reasoning_budget = budget_spec(body, tok)  # asgi/reasoning_budget.py
    params.sampling.reasoning_control = reasoning_control(body)
    default = server_state().settings.speculative
    params.speculative = default.with_request(body) if default is not None else None  # speculative.* fields
    return params


def check_context(prompts: list[list[int]], n_ctx: int, *, generating: bool = True) -> None:
    """A prompt that cannot fit the slot is a 400 with the sizes, before any work is queued."""
    for prompt in prompts:
        if len(prompt) >= n_ctx if generating else len(prompt) > n_ctx:
            raise ContextExceeded(
                f"the request ({len(prompt)} tokens) exceeds the available context size ({n_ctx} tokens), "
                "try increasing it",
                n_prompt_tokens=len(prompt), n_ctx=n_ctx,
            )


def make_tasks(served: ServedModel, prompts: list[list[int]], params: CompletionParams) -> list[Any]:
    """One scheduler Task per prompt and per requested completion (n_cmpl)."""
    assert served.model is not None
    check_context(prompts, served.model.n_ctx_seq)
    limit = server_state().settings.limits.predict
    tasks = []
    for prompt in prompts:
        for _ in range(params.n_cmpl):
            p = copy_params(params)
            tasks.append(Task(
                prompt=list(prompt), params=p.sampling,
                n_predict=p.n_predict if 0 <= p.n_predict <= limit else limit, stop=list(p.stop),
                n_keep=p.n_keep, n_discard=p.n_discard, id_slot=p.id_slot, cache_prompt=p.cache_prompt,
                return_progress=p.return_progress and p.stream,
                speculative=p.speculative,
                lora=lora_scales(p.lora, len(served.model.lora.adapters)) if p.lora and served.model.lora else None,
                settings=slot_params(served, p),
            ))
    return tasks


_DEBUG_ONLY = ("dry_sequence_breakers", "stop", "logit_bias", "grammar", "grammar_lazy", "grammar_triggers",
               "preserved_tokens")


def slot_params(served: ServedModel, params: CompletionParams) -> dict[str, Any]:
    """The task's `params` in /slots: task_params::to_json(only_metrics), the form /slots
    shows unless LLAMA_SERVER_SLOTS_DEBUG is set (no stop words, biases nor grammar), with
    `lora` as llama-server keeps the request's list (a map: by id, the last scale given wins)."""
    assert served.model is not None
    settings = params.generation_settings(served.model.n_ctx_seq, served.name)
    for key in ("n_ctx", "model", *_DEBUG_ONLY):  # n_ctx and model are the slot's own fields
        settings.pop(key, None)
    settings["lora"] = [{"id": i, "scale": x} for i, x in sorted(dict(params.lora or []).items())]
    return settings


async def prompt_tokens(served: ServedModel, prompt: Any) -> list[list[int]]:
    """Tokenized prompts, with the --system-prompt-file text in front of each."""
    assert served.model is not None
    settings = server_state().settings
    system = settings.system_prompt
    run = completion_prompts(served.tokenizer, prompt, settings.limits, system, served.check_text_fits)
    prompts = await tokenize_off_loop(text_size(prompt) + len(system or ""), run)
    for p in prompts:
        check_token_ids(p, served.model.n_vocab)
    return prompts


def detok(served: ServedModel, tokens: list[int]) -> str:
    tok = served.tokenizer
    return b"".join(tok.token_to_piece(t, True) for t in tokens).decode("utf-8", errors="replace")


def wants_verbose(body: dict[str, Any]) -> bool:
    """llama-server adds `__verbose` (the native result) to OpenAI answers for `"verbose": true`
    or a server started with --verbose."""
    return body.get("verbose") is True or bool(server_state().settings.verbose)


def verbose_body(served: ServedModel, params: CompletionParams, final: Any, prompt: list[int]) -> dict[str, Any]:
    assert served.model is not None
    return completion_final(final, index=0, model=served.name, prompt=detok(served, prompt),
                            settings=params.generation_settings(served.model.n_ctx_seq, served.name), stream=False,
                            return_tokens=params.return_tokens, response_fields=[])
