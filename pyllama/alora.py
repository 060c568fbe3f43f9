"""Activated LoRA (aLoRA): an adapter that applies only from its invocation sequence onward.

An aLoRA's GGUF carries `adapter.alora.invocation_tokens`. When every adapter a task runs
with is an aLoRA (llama-server's lora_all_alora), exactly one may be enabled; the prompt is
searched, from its end, for the last occurrence of that adapter's invocation tokens, and:

- not found: the adapter is off for the whole task (its scale becomes 0);
- found at `start`: the prompt tokens before `start - 1` are read with the base model, the
  rest of the prompt and everything generated with the adapter. (llama-server switches at
  `start - 1`, one token before the sequence: server-context.cpp stops the pre-invocation
  batch at `alora_invocation_start - 1`; we switch at the same place so the numbers match.)

Because the KV entries before the switch are the base model's, a slot keeps its cached
prompt when it changes from no adapter, or from aLoRAs, to aLoRAs (lora_should_clear_cache),
and a task that finds its invocation reuses at most `start - 1` cached tokens: the cache
past that point may hold entries computed with the adapter.

Also as there, the comparison that decides on clearing looks at the scales the task asks
for, before the search: a slot that served an aLoRA and then gets a task with the same
scales whose prompt lacks the invocation keeps its whole common prefix, entries computed
with the adapter included (llama-server caps the reuse only when the invocation is found).

The search is llama-server's backward scan, quirks included: after a partial match fails,
the scan restarts at the next token without re-checking the one that broke it, so
invocation tokens (X, Y) are not found in ... X Y Y. Matching it keeps both servers
applying the adapter to the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyllama.lora import LoraAdapter

Scales = tuple[float, ...]


def invocation_start(prompt: Sequence[int], invocation: Sequence[int]) -> int | None:
    """Where the last occurrence of `invocation` starts in `prompt` (llama-server's scan), or None."""
    if not invocation:
        return None
    match = len(invocation) - 1
    for i in range(len(prompt) - 1, -1, -1):
        if prompt[i] == invocation[match]:
            if match == 0:
                return i
            match -= 1
        else:
            match = len(invocation) - 1
    return None


def all_alora(adapters: Sequence[LoraAdapter], scales: Scales) -> bool:
    """True when some adapter is enabled and every enabled one is an aLoRA (lora_all_alora)."""
    found = False
    for adapter, scale in zip(adapters, scales, strict=True):
        if scale != 0:
            if not adapter.alora_invocation_tokens:
                return False
            found = True
    return found


def should_clear_cache(adapters: Sequence[LoraAdapter], current: Scales, nxt: Scales) -> bool:
    """A slot's cache goes when its scales change, unless the change is from no adapter or
    aLoRAs only, to aLoRAs only (lora_should_clear_cache)."""
    keep_current = not any(s != 0 for s in current) or all_alora(adapters, current)
    return not keep_current or not all_alora(adapters, nxt)


def plan(adapters: Sequence[LoraAdapter], scales: Scales, prompt: Sequence[int]) -> tuple[Scales, int]:
    """A task's scales after the invocation search, and the prompt position where its aLoRA
    starts applying (-1: the scales apply throughout). Raises ValueError for several aLoRAs."""
    if not all_alora(adapters, scales):
        return scales, -1
    enabled = [i for i, s in enumerate(scales) if s != 0]
    if len(enabled) != 1:
        raise ValueError("Cannot run multiple aLoRAs in a single request")
    i = enabled[0]
    start = invocation_start(prompt, adapters[i].alora_invocation_tokens)
    if start is None:
        return tuple(0.0 if k == i else s for k, s in enumerate(scales)), -1
    return scales, start


def without(scales: Scales, adapters: Sequence[LoraAdapter]) -> Scales:
    """`scales` with every aLoRA off: what the tokens before the switch are read with."""
    return tuple(0.0 if a.alora_invocation_tokens else s for a, s in zip(adapters, scales, strict=True))
