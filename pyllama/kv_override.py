"""Model metadata overrides: llama.cpp's `--override-kv KEY=TYPE:VALUE,...`.

The syntax is common/common.cpp's `string_parse_kv_override` (same limits, same error texts);
the effect is src/llama-model-loader.cpp's: an override replaces the value the loader reads
for its key, a key the file lacks still takes the override, and an override whose type is not
the one the key holds is ignored with a warning ("Bad metadata override type"), the file's
value staying in force. pyllama reads every value from `GGUFFile.metadata`, so applying the
overrides to that mapping right after the file is read puts them wherever a value is read
(config, tokenizer); chat templates are the exception, as in llama.cpp. Lives in the engine so `pyllama run`, the server and the
browser share one parser.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pyllama.errors import InvalidRequestError
from pyllama.gguf_file import GGUFFile

log = logging.getLogger("pyllama.kv_override")

KVType = Literal["int", "float", "bool", "str"]
KVValue = int | float | bool | str

# llama_model_kv_override's fixed buffers: char key[128], char val_str[128] (both NUL-ended).
MAX_KEY_BYTES = 127
MAX_STR_BYTES = 127
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# GGUF value type codes (pyllama.gguf_file) -> the override type that may replace them.
_GGUF_KIND: dict[int, KVType] = {
    **{t: "int" for t in (0, 1, 2, 3, 4, 5, 10, 11)},
    6: "float", 12: "float", 7: "bool", 8: "str",
}
_GGUF_CODE: dict[KVType, int] = {"int": 11, "float": 12, "bool": 7, "str": 8}  # added keys: int64, f64

# llama_model_chat_template reads the file's own key/value list, never through overrides.
FILE_ONLY_PREFIX = "tokenizer.chat_template"

_ATOL = re.compile(r"\s*([+-]?\d+)")
_ATOF = re.compile(r"\s*([+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))", re.IGNORECASE)


@dataclass(frozen=True)
class KVOverride:
    key: str
    type: KVType
    value: KVValue


def _atol(text: str) -> int:
    """C's atol: leading digits (after blanks and a sign), 0 when there are none."""
    m = _ATOL.match(text)
    return max(_INT64_MIN, min(_INT64_MAX, int(m.group(1)))) if m else 0


def _atof(text: str) -> float:
    """C's atof: the longest leading decimal number (or inf/nan), 0.0 when there is none."""
    m = _ATOF.match(text)
    return float(m.group(1)) if m else 0.0


def parse_kv_override(item: str) -> KVOverride:
    """One `KEY=TYPE:VALUE`; InvalidRequestError with string_parse_kv_override's message."""
    key, sep, rest = item.partition("=")
    # An empty key is the C list's terminator (it would silently drop the overrides after it).
    if not sep or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidRequestError(f"malformed KV override '{item}'")
    if rest.startswith("int:"):
        return KVOverride(key, "int", _atol(rest[4:]))
    if rest.startswith("float:"):
        return KVOverride(key, "float", _atof(rest[6:]))
    if rest.startswith("bool:"):
        if rest[5:] not in ("true", "false"):
            raise InvalidRequestError(f"invalid boolean value for KV override '{item}'")
        return KVOverride(key, "bool", rest[5:] == "true")
    if rest.startswith("str:"):
        if len(rest[4:].encode()) > MAX_STR_BYTES:
            raise InvalidRequestError(f"malformed KV override '{item}', value cannot exceed 127 chars")
        return KVOverride(key, "str", rest[4:])
    raise InvalidRequestError(f"invalid type for KV override '{item}'")


def parse_kv_overrides(value: str) -> list[KVOverride]:
    """A comma-separated list (CSV quoting, as common/arg.cpp's parse_csv_row)."""
    return [parse_kv_override(item) for item in next(csv.reader([value]), [""])]


def apply_kv_overrides(gguf: GGUFFile, overrides: list[KVOverride], *, quiet: bool = False) -> None:
    """Put the overrides into `gguf.metadata`. The first override of a key wins (llama.cpp
    keeps overrides in a map filled with insert); one of the wrong type is logged and dropped.
    `quiet`: no log lines (a header read only to estimate memory, before the real load)."""
    seen: set[str] = set()
    for o in overrides:
        if o.key in seen:
            continue
        seen.add(o.key)
        if o.key.startswith(FILE_ONLY_PREFIX):
            if not quiet:
                log.warning("metadata override '%s' ignored: chat templates are read from the file, as llama.cpp does "
                            "(use --chat-template)", o.key)
            continue
        current = gguf.metadata.get(o.key)
        if current is not None:
            code = gguf.value_types.get(o.key)
            expected = _GGUF_KIND.get(code) if code is not None else _kind_of(current)
            if expected != o.type:
                if not quiet:
                    log.warning("Bad metadata override type for key '%s', expected %s but got %s",
                                o.key, expected or "arr", o.type)
                continue
        if not quiet:
            log.info("using metadata override (%s) '%s' = %s", o.type, o.key, _shown(o))
        gguf.metadata[o.key] = o.value
        gguf.value_types.setdefault(o.key, _GGUF_CODE[o.type])


def _kind_of(value: object) -> KVType | None:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    return "str" if isinstance(value, str) else None


def _shown(o: KVOverride) -> str:
    if o.type == "bool":
        return "true" if o.value else "false"
    return f"{o.value:.6f}" if o.type == "float" else str(o.value)
