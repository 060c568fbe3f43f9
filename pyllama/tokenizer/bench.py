"""Tokenizer throughput: `tokenize_throughput` and the `pyllama bench --tokenizer` report.

The text mixes English prose, Python code and CJK (Chinese, Japanese, Korean) the way
chat prompts do; it is built deterministically from varied sentences so words repeat
about as often as in real text (the BPE word cache matters, and this is honest about it).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyllama.tokenizer import Tokenizer

_EN = (
    "The quick brown fox jumps over the lazy dog while the committee debates the budget.",
    "In 2024, researchers measured 3.14159 units of throughput across 12 distinct benchmarks.",
    "She said she'd be there by noon, but the train was delayed for forty-five minutes.",
    "Tokenizers split text into pieces; each piece maps to an integer id in the vocabulary.",
    "Mountains, rivers and forests covered the northern province, sparsely populated and cold.",
    "Why didn't anyone notice the error earlier? Because nobody read the logs carefully!",
    "Quantum computing promises exponential speedups for certain classes of problems.",
    "The museum's new exhibition features paintings from the late nineteenth century.",
)
_CODE = (
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (let i = 0; i < items.length; i++) {\n  total += items[i].price * items[i].qty;\n}\n",
    'SELECT name, COUNT(*) FROM orders WHERE created_at > "2024-01-01" GROUP BY name;\n',
    "class Cache:\n    def __init__(self):\n        self._data: dict[str, bytes] = {}\n",
    "    result = {k: v for k, v in sorted(mapping.items()) if v is not None}\n",
)
_CJK = (
    "今天天气很好，我们一起去公园散步吧。",
    "機械学習のモデルはテキストをトークンに分割します。",
    "인공지능은 우리의 일상생활을 빠르게 변화시키고 있습니다.",
    "这个分词器需要与参考实现逐位一致。",
    "東京の桜は三月の終わりに満開になります。",
    "서울의 지하철은 매우 편리하고 깨끗합니다.",
)


def mixed_text(n_bytes: int = 1 << 20, seed: int = 0) -> str:
    """About `n_bytes` of UTF-8: ~60% English, ~25% code, ~15% CJK, shuffled with numbers."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        r = rng.random()
        pool = _EN if r < 0.6 else _CODE if r < 0.85 else _CJK
        s = rng.choice(pool)
        if rng.random() < 0.3:
            words = s.split(" ")
            rng.shuffle(words)
            s = " ".join(words) + f" #{rng.randrange(100000)}"
        s += "\n" if rng.random() < 0.2 else " "
        parts.append(s)
        size += len(s.encode("utf-8"))
    return "".join(parts)


def sample_text(n_bytes: int = 1 << 20) -> str:
    """The benchmark text (1 MiB by default); see `mixed_text`."""
    return mixed_text(n_bytes)


def tokenize_throughput(tokenizer: Tokenizer, text: str) -> float:
    """MB/s (10^6 bytes of UTF-8 input per second) for one tokenize call on `text`."""
    n = len(text.encode("utf-8"))
    t0 = time.perf_counter()
    tokenizer.tokenize(text, add_special=True, parse_special=True)
    dt = time.perf_counter() - t0
    return n / 1e6 / max(dt, 1e-9)


def bench_tokenizer(tokenizer: Tokenizer, n_bytes: int = 1 << 20, seed: int = 0) -> dict[str, float]:
    """Throughput on fresh caches and again warm; what `pyllama bench --tokenizer` prints."""
    text = mixed_text(n_bytes, seed)
    n = len(text.encode("utf-8"))
    t0 = time.perf_counter()
    ids = tokenizer.tokenize(text, add_special=True, parse_special=True)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokenizer.tokenize(text, add_special=True, parse_special=True)
    warm = time.perf_counter() - t0
    return {
        "bytes": float(n),
        "tokens": float(len(ids)),
        "mb_per_s": n / 1e6 / max(cold, 1e-9),
        "mb_per_s_warm": n / 1e6 / max(warm, 1e-9),
        "tokens_per_s": len(ids) / max(cold, 1e-9),
    }
