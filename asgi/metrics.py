"""/metrics in llama-server's Prometheus text: counters since start, gauges per scrape window.

llama-server's throughput gauges (`prompt_tokens_seconds`, `predicted_tokens_seconds`) are
averaged over the window between two scrapes: every scrape resets the "bucket". Its
counters survive sleep mode (the model is unloaded, the server's metrics are not), and
while asleep it serves the text it rendered on falling asleep, the first scrape with that
window's rates, the next ones with empty windows. `MetricsBook` keeps all of that outside
the scheduler, which goes away with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (name, kind, help) in llama-server's order (server_task_result_metrics::to_metrics)
COUNTERS = (
    ("prompt_tokens_total", "Number of prompt tokens processed, excluding cached tokens"),
    ("prompt_tokens_cached_total", "Number of prompt tokens reused from the cache"),
    ("prompt_seconds_total", "Total time spent processing prompts"),
    ("tokens_predicted_total", "Number of generation tokens processed"),
    ("tokens_predicted_seconds_total", "Total time spent generating tokens"),
    ("n_decode_total", "Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding"),
    ("n_tokens_max", "Largest observed sequence length (prompt + generation)"),
    ("spec_decode_num_draft_tokens_total", "Speculative: Total draft tokens generated"),
    ("spec_decode_num_accepted_tokens_total", "Speculative: Total draft tokens accepted by the target model"),
    ("spec_decode_num_drafts_total", "Speculative: Total speculative decoding verification steps"),
)
GAUGES = (
    ("prompt_tokens_seconds", "Average prompt throughput in tokens/s"),
    ("predicted_tokens_seconds", "Average generation throughput in tokens/s"),
    ("requests_processing", "Number of requests processing"),
    ("requests_deferred", "Number of requests deferred"),
    ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call"),
    ("kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage."),
    ("kv_cache_tokens", "KV-cache tokens."),
)

# scheduler Metrics attribute -> our total's key (summed over models and carried over unloads)
TOTALS = ("prompt_tokens_total", "prompt_tokens_cached_total", "prompt_seconds_total", "tokens_predicted_total",
          "predicted_seconds_total", "predicted_steps_total", "n_decode_total", "n_busy_slots_total")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def render(values: dict[str, float]) -> str:
    out = []
    for kind, items in (("counter", COUNTERS), ("gauge", GAUGES)):
        for name, help_text in items:
            out.append(f"# HELP llamacpp:{name} {help_text}\n# TYPE llamacpp:{name} {kind}\n"
                       f"llamacpp:{name} {_number(values.get(name, 0.0))}\n")
    return "".join(out)


@dataclass
class MetricsBook:
    base: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0.0))  # from unloaded models
    n_tokens_max: float = 0.0
    window_start: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0.0))  # at the last scrape
    asleep_values: dict[str, float] | None = None  # rendered on falling asleep

    def totals(self, loaded: list[Any]) -> dict[str, float]:
        totals = dict(self.base)
        for served in loaded:
            m = served.scheduler.metrics
            for key in TOTALS:
                totals[key] += float(getattr(m, key, 0))
        return totals

    def retire(self, metrics: Any) -> None:
        """A model is unloaded: keep its counters."""
        for key in TOTALS:
            self.base[key] += float(getattr(metrics, key, 0))
        self.n_tokens_max = max(self.n_tokens_max, float(getattr(metrics, "n_tokens_max", 0)))

    def values(self, loaded: list[Any]) -> dict[str, float]:
        """Every metric now, with the rates of the window since the last scrape."""
        t = self.totals(loaded)
        w = self.window_start

        def rate(count: str, seconds: str) -> float:
            dt = t[seconds] - w[seconds]
            return (t[count] - w[count]) / dt if dt > 0 else 0.0

        kv_tokens = kv_cells = busy = deferred = 0
        n_tokens_max = self.n_tokens_max
        spec = {"n_draft_total": 0, "n_draft_accepted_total": 0, "n_draft_steps_total": 0}
        for served in loaded:
            scheduler = served.scheduler
            for key in spec:  # speculative decoding's counters (pyllama.scheduler_spec)
                spec[key] += int(getattr(scheduler, key, 0))
            kv_tokens += sum(len(s.cache_tokens) for s in scheduler.slots)
            kv_cells += served.model.n_ctx_seq * served.spec.n_parallel
            busy += scheduler.n_busy
            deferred += int(getattr(scheduler, "deferred", 0))
            n_tokens_max = max(n_tokens_max, float(getattr(scheduler.metrics, "n_tokens_max", 0)))
        return {
            "prompt_tokens_total": t["prompt_tokens_total"],
            "prompt_tokens_cached_total": t["prompt_tokens_cached_total"],
            "prompt_seconds_total": t["prompt_seconds_total"],
            "tokens_predicted_total": t["tokens_predicted_total"],
            "tokens_predicted_seconds_total": t["predicted_seconds_total"],
            "n_decode_total": t["n_decode_total"],
            "n_tokens_max": n_tokens_max,
            "prompt_tokens_seconds": rate("prompt_tokens_total", "prompt_seconds_total"),
            "predicted_tokens_seconds": rate("predicted_steps_total", "predicted_seconds_total"),
            "requests_processing": busy,
            "requests_deferred": deferred,
            "n_busy_slots_per_decode": t["n_busy_slots_total"] / max(1.0, t["n_decode_total"]),
            "kv_cache_usage_ratio": kv_tokens / kv_cells if kv_cells else 0.0,
            "kv_cache_tokens": kv_tokens,
            "spec_decode_num_draft_tokens_total": spec["n_draft_total"],
            "spec_decode_num_accepted_tokens_total": spec["n_draft_accepted_total"],
            "spec_decode_num_drafts_total": spec["n_draft_steps_total"],
        }

    def scrape(self, loaded: list[Any]) -> str:
        """The /metrics text; starts a new rate window, as llama-server's scrape does."""
        if self.asleep_values is not None:
            text = render(self.asleep_values)
            self.asleep_values["prompt_tokens_seconds"] = 0.0
            self.asleep_values["predicted_tokens_seconds"] = 0.0
            self.window_start = self.totals([])
            return text
        text = render(self.values(loaded))
        self.window_start = self.totals(loaded)
        return text

    def fall_asleep(self, served: Any) -> None:
        """Before `served` is unloaded for sleep: keep what a scrape would show now."""
        self.asleep_values = self.values([served])
        self.retire(served.scheduler.metrics)

    def wake(self) -> None:
        # A window a sleeping scrape reported is not reported again: that scrape moved
        # window_start already; without one, the window goes on (update_cached_responses).
        self.asleep_values = None
