"""The host-memory prompt cache: llama-server's `--cache-ram` (server_prompt_cache).

A slot holds one prompt's KV cache. When a new task is about to overwrite it (the slot
was picked as least recently used, or the new prompt would keep less than half of it),
the slot's tokens and K/V go here first; the new task then takes the cached prompt that
shares the longest prefix with it, if that beats what the slot already holds. So a
conversation that lost its slot to another one resumes without re-reading its prompt.

The entries are kept oldest first and bounded as llama.cpp bounds them: by a size in
bytes (`limit_mib`; the oldest go first) and by a token count (the context size, raised to
what the byte limit would hold at the entries' average bytes per token). An entry is
taken out of the cache when it is restored (the slot holds it again).

The K/V copies are pyllama.kv_cache.KVCache.seq_state's, the same arrays a slot file
(pyllama.slot_store) holds, kept in memory; an f16 cache's values are stored as float16
(they are float16 values: nothing is lost, and half the memory of float32).

Engine code: no threads, runs under Pyodide. The messages are llama-server's, logged at
debug level (shown with --verbose) except the evictions, which are warnings there too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyllama.kv_cache import KVCache, common_prefix

log = logging.getLogger(__name__)

MIB = 1024 * 1024
Array = np.ndarray[Any, Any]


@dataclass
class CachedPrompt:
    """One saved slot: its tokens, its K/V per layer, and the LoRA scales they were computed with."""

    tokens: list[int]
    ks: list[Array]
    vs: list[Array]
    lora: tuple[float, ...] = field(default=())

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.ks) + sum(int(a.nbytes) for a in self.vs)


def _mib(n: float) -> float:
    return n / MIB


class PromptCache:
    """Saved slot states, oldest first; `save`, `load` and `update` as llama-server's
    server_prompt_cache alloc (+ copy), load and update."""

    def __init__(self, limit_mib: int, limit_tokens: int) -> None:
        """`limit_mib` < 0: no size limit (--cache-ram -1); `limit_tokens` 0: no token limit."""
        self.limit_size = MIB * max(0, limit_mib)  # bytes, 0 = no limit
        self.limit_tokens = max(0, limit_tokens)
        self.states: list[CachedPrompt] = []

    def size(self) -> int:
        return sum(s.nbytes for s in self.states)

    def n_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.states)

    def save(self, kv: KVCache, seq: int, tokens: list[int], lora: tuple[float, ...] = ()) -> bool:
        """Copy sequence `seq` (whose cache holds `tokens`) into the cache; False when it was
        not stored (empty, already cached, or larger than the whole limit)."""
        tokens = tokens[: kv.length(seq)]
        if not tokens:
            return False
        for s in self.states:
            if s.lora == lora and common_prefix(s.tokens, tokens) == len(tokens):
                log.debug(" - prompt is already in the cache, skipping")
                return False
        ks, vs = kv.seq_state(seq)
        if kv.type_k == "f16":
            ks = [k.astype(np.float16) for k in ks]
        if kv.type_v == "f16":
            vs = [v.astype(np.float16) for v in vs]
        new = CachedPrompt(list(tokens), ks, vs, lora)
        log.debug(" - saving prompt with length %d, total state size = %.3f MiB", len(tokens), _mib(new.nbytes))
        if self.limit_size > 0 and new.nbytes > self.limit_size:
            log.warning(" - prompt state size %.3f MiB exceeds cache size limit %.3f MiB, skipping",
                        _mib(new.nbytes), _mib(self.limit_size))
            return False
        kept = []
        for s in self.states:  # cached prompts the new one contains are obsolete
            if s.lora == lora and common_prefix(s.tokens, tokens) == len(s.tokens):
                log.debug(" - removing obsolete cached prompt with length %d", len(s.tokens))
            else:
                kept.append(s)
        self.states = kept
        if self.limit_size > 0:
            while self.states and self.size() + new.nbytes > self.limit_size:
                log.warning(" - making room for prompt cache entry, removing oldest entry (size = %.3f MiB)",
                            _mib(self.states[0].nbytes))
                self.states.pop(0)
        self.states.append(new)
        return True

    def best(self, slot_tokens: list[int], prompt: list[int]) -> CachedPrompt | None:
        """The cached prompt to restore for `prompt` instead of what the slot holds: the one
        that shares more of the prompt AND keeps more of itself than the slot's tokens do;
        prompts that would keep under a quarter of themselves are never taken (a large
        prompt is not traded for a small overlap)."""
        if not prompt:
            return None
        lcp_slot = common_prefix(slot_tokens, prompt)
        f_keep_best = lcp_slot / len(slot_tokens) if slot_tokens else -1.0  # an empty slot: any entry wins
        f_sim_best = lcp_slot / len(prompt)
        log.debug(" - looking for better prompt, base f_keep = %.3f, f_sim = %.3f", f_keep_best, f_sim_best)
        best = None
        for s in self.states:
            lcp = common_prefix(s.tokens, prompt)
            f_keep, f_sim = lcp / len(s.tokens), lcp / len(prompt)
            log.debug("   - prompt with length %7d, lcp = %7d, f_keep = %.3f, f_sim = %.3f",
                      len(s.tokens), lcp, f_keep, f_sim)
            if f_keep < 0.25:
                continue
            if f_keep_best < f_keep and f_sim_best < f_sim:
                f_keep_best, f_sim_best, best = f_keep, f_sim, s
        if best is not None:
            log.debug(" - found better prompt with f_keep = %.3f, f_sim = %.3f", f_keep_best, f_sim_best)
        return best

    def load(self, kv: KVCache, seq: int, slot_tokens: list[int], prompt: list[int]) -> CachedPrompt | None:
        """Restore the best entry for `prompt` into sequence `seq` and take it out of the
        cache; None when the slot's own tokens are the better start (nothing changes)."""
        best = self.best(slot_tokens, prompt)
        if best is None:
            return None
        kv.set_seq_state(seq, best.ks, best.vs)
        self.states.remove(best)
        return best

    def update(self) -> None:
        """Enforce the limits after a change, oldest entries first; log the cache's state."""
        if self.limit_size > 0:
            while self.states and self.size() > self.limit_size:
                log.warning(" - cache size limit reached, removing oldest entry (size = %.3f MiB)",
                            _mib(self.states[0].nbytes))
                self.states.pop(0)
        size_per_token = max(1.0, self.size() / max(1, self.n_tokens()))
        # the token limit grows to what the byte limit holds at the current bytes per token
        limit_tokens_cur = (max(self.limit_tokens, int(self.limit_size / size_per_token))
                            if self.limit_size > 0 else self.limit_tokens)
        if self.limit_tokens > 0:
            while self.states and self.n_tokens() > limit_tokens_cur:
                log.warning(" - cache token limit (%d, est: %d) reached, removing oldest entry (size = %.3f MiB)",
                            self.limit_tokens, limit_tokens_cur, _mib(self.states[0].nbytes))
                self.states.pop(0)
        log.debug(" - cache state: %d prompts, %.3f MiB (limits: %.3f MiB, %d tokens, %d est)",
                  len(self.states), _mib(self.size()), _mib(self.limit_size), self.limit_tokens, limit_tokens_cur)
        for i, s in enumerate(self.states):
            log.debug("   - prompt %d: %7d tokens, %9.3f MiB", i, len(s.tokens), _mib(s.nbytes))
