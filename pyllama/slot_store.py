"""Saving a slot's KV cache to a file and restoring it (llama-server's /slots?action=save|restore).

File layout (little-endian):
    b"PYLLSLOT"                 magic
    uint32 version              FORMAT_VERSION
    uint32 header length N
    N bytes of JSON             model identity, token count, per-array dtype/shape
    raw arrays                  tokens (int32), then K and V of every layer, in header order

The model identity is a hash of the architecture, shapes and vocabulary, so a file saved
with one model is refused by another. Files are written to a temporary name in the same
folder and renamed into place, so a crash never leaves a half-written file under the real
name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pyllama.engine import Model
from pyllama.errors import InvalidRequestError

MAGIC = b"PYLLSLOT"
FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class SlotFileError(InvalidRequestError):
    """The slot file cannot be used with this model (wrong model, version, or damaged)."""


def model_identity(model: Model) -> str:
    """A stable fingerprint of what the KV cache depends on."""
    h = hashlib.sha256()
    cfg = model.config
    h.update(json.dumps([cfg.arch, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim,
                         cfg.n_vocab, cfg.rope.freq_base, cfg.rope.n_rot]).encode())
    for name in sorted(model.gguf.tensors):
        t = model.gguf.tensors[name]
        h.update(f"{name}:{t.ggml_type.name}:{t.shape}".encode())
    tokens = model.gguf.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        h.update("\x00".join(tokens).encode("utf-8", "replace"))
    return h.hexdigest()


def safe_path(folder: str | Path, filename: str) -> Path:
    """Confine `filename` to `folder`: no separators, no '..', nothing hidden."""
    if not filename or not _SAFE_NAME.match(filename) or filename in (".", "..") or filename.startswith("."):
        raise InvalidRequestError(f"invalid filename {filename!r}: use letters, digits, '.', '_' and '-' only")
    return Path(folder) / filename


def save_slot(model: Model, seq: int, tokens: list[int], path: Path) -> int:
    """Write sequence `seq`'s cache and tokens; returns bytes written."""
    ks, vs = model.kv.seq_state(seq)
    arrays: list[np.ndarray[Any, Any]] = [np.asarray(tokens, dtype=np.int32)]
    for k, v in zip(ks, vs, strict=True):
        arrays += [np.ascontiguousarray(k), np.ascontiguousarray(v)]
    header = json.dumps({
        "model": model_identity(model),
        "n_tokens": len(tokens),
        "arrays": [[a.dtype.str, list(a.shape)] for a in arrays],
    }).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".slot", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + struct.pack("<II", FORMAT_VERSION, len(header)) + header)
            for a in arrays:
                fh.write(a.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path.stat().st_size


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash right after it must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. a platform without directory handles
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_slot(model: Model, seq: int, path: Path) -> tuple[list[int], int]:
    """Restore sequence `seq` from a file; returns (tokens, bytes read)."""
    if not path.is_file():
        raise SlotFileError(f"slot file {path.name!r} does not exist")
    data = path.read_bytes()
    if len(data) < 16 or data[:8] != MAGIC:
        raise SlotFileError(f"{path.name}: not a pyllama slot file")
    version, hlen = struct.unpack_from("<II", data, 8)
    if version != FORMAT_VERSION:
        raise SlotFileError(f"{path.name}: slot file version {version} is not supported (expected {FORMAT_VERSION})")
    if 16 + hlen > len(data):
        raise SlotFileError(f"{path.name}: slot file is truncated (header)")
    try:
        header = json.loads(data[16 : 16 + hlen])
        specs = [(np.dtype(d), tuple(int(n) for n in s)) for d, s in header["arrays"]]
        if not isinstance(header, dict) or any(n < 0 for _, shape in specs for n in shape):
            raise ValueError("bad array shapes")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise SlotFileError(f"{path.name}: damaged slot file header ({exc})") from None
    if header.get("model") != model_identity(model):
        raise SlotFileError(f"{path.name}: slot file was saved with a different model")
    if len(specs) != 1 + 2 * model.config.n_layer:
        raise SlotFileError(f"{path.name}: slot file has {len(specs)} arrays, expected {1 + 2 * model.config.n_layer}")
    arrays: list[np.ndarray[Any, Any]] = []
    pos = 16 + hlen
    for dtype, shape in specs:
        n = int(np.prod(shape)) * dtype.itemsize
        if pos + n > len(data):
            raise SlotFileError(f"{path.name}: slot file is truncated")
        arrays.append(np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=pos).reshape(shape))
        pos += n
    if pos != len(data):
        raise SlotFileError(f"{path.name}: slot file has {len(data) - pos} unexpected bytes at the end")
    tokens = arrays[0].astype(int).tolist()
    try:
        model.kv.set_seq_state(seq, arrays[1::2], arrays[2::2])
    except (ValueError, TypeError, IndexError) as exc:
        raise SlotFileError(f"{path.name}: slot file does not fit this model's cache ({exc})") from None
    return tokens, len(data)
