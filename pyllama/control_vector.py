"""Control vectors (`--control-vector`, `--control-vector-scaled`, `--control-vector-layer-range`),
as llama.cpp has them (common/common.cpp common_control_vector_load, src/llama-adapter.cpp
llama_adapter_cvec, the model builders' build_cvec).

A control-vector GGUF (`general.architecture` "controlvector", written by llama.cpp's
cvector-generator) holds 1-D F32 tensors `direction.N`, N >= 1, all of one width n_embd.
Every file's directions are multiplied by its scale and summed over files; the sum for layer
N is added to the output of block N (after the FFN's residual add) for N in the inclusive
layer range, never to block 0 (llama.cpp keeps no tensor for it). The range defaults to all
layers: a start <= 0 means 1 and an end <= 0 means n_layer. A range that selects nothing
(start > end) is accepted and applies nothing, as in llama.cpp.

A file llama.cpp would skip as invalid (a tensor that is not `direction.N` with N >= 1, not
F32, not 1-D, of another width than its siblings, or no tensors at all) is an error here:
llama.cpp then fails the whole load ("no valid control vector files passed"), and so does
pyllama, with one line naming the file and the problem.

The vectors live on the network (`LlamaModel.control_vector`, one row or None per layer);
with none set, a forward pass pays one `is None` check per layer. Encoders (BERT) keep their
own forward pass without it, as llama.cpp's BERT builder does not call build_cvec.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyllama.errors import ModelLoadError
from pyllama.gguf_file import read_gguf

if TYPE_CHECKING:
    from pyllama.models import LlamaModel

F32 = np.ndarray[Any, np.dtype[np.float32]]

__all__ = ["ControlVector", "apply_control_vector", "load_control_vectors", "parse_float", "parse_int"]

_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE)
_INT32 = 2**31


def parse_int(text: str) -> int:
    """std::stoi: the leading integer of `text` (ValueError when there is none or it overflows)."""
    m = _INT.match(text)
    if m is None:
        raise ValueError(f"not an integer: {text!r}")
    value = int(m.group())
    if not -_INT32 <= value < _INT32:
        raise ValueError(f"out of range: {text!r}")
    return value


def parse_float(text: str) -> float:
    """std::stof: the leading number of `text` (ValueError when there is none)."""
    m = _FLOAT.match(text)
    if m is None:
        raise ValueError(f"not a number: {text!r}")
    return float(np.float32(float(m.group().strip())))


@dataclass
class ControlVector:
    """The scaled sum of the files' directions: row i is layer i + 1 (layer 0 has none)."""

    n_embd: int
    data: F32  # (n_rows, n_embd) float32

    def layers(self, n_layer: int, start: int, end: int) -> list[F32 | None]:
        """The vector each block adds (llama_adapter_cvec::apply and tensor_for): None for
        layer 0, layers outside [start, end] (start <= 0 -> 1, end <= 0 -> n_layer)."""
        start = 1 if start <= 0 else start
        end = n_layer if end <= 0 else end
        out: list[F32 | None] = [None] * n_layer
        for il in range(max(start, 1), min(end, n_layer - 1) + 1):
            # layers past the file's last direction add llama.cpp's zeroed tensor: nothing
            out[il] = self.data[il - 1] if il - 1 < self.data.shape[0] else None
        return out


def _layer_index(name: str) -> int:
    """N of `direction.N` as llama.cpp reads it (std::stoi of what follows the first '.'), -1 if none."""
    prefix, dot, rest = name.partition(".")
    if not dot or prefix != "direction":
        return -1
    try:
        return parse_int(rest)
    except ValueError:
        return -1


def load_one(path: str | Path, scale: float) -> ControlVector:
    """One file's directions times `scale` (common_control_vector_load_one); ModelLoadError if invalid."""
    try:
        gguf = read_gguf(path)
    except (ModelLoadError, OSError) as exc:
        raise ModelLoadError(f"failed to load control vector file from {path}: {exc}") from None
    if not gguf.tensors:
        raise ModelLoadError(f"{path}: no direction tensors found in the control vector file")
    n_embd = -1
    rows: dict[int, F32] = {}
    strength = np.float32(scale)
    for name, info in gguf.tensors.items():
        il = _layer_index(name)
        if il < 0:
            raise ModelLoadError(f"{path}: invalid/unparsable direction tensor layer index ({name!r})")
        if il == 0:
            raise ModelLoadError(f"{path}: invalid (zero) direction tensor layer index ({name!r})")
        if info.ggml_type.name != "F32":
            raise ModelLoadError(f"{path}: invalid (non-F32) direction tensor type ({name} is {info.ggml_type.name})")
        dims = list(info.shape)
        while len(dims) > 1 and dims[0] == 1:  # ggml_n_dims: trailing ne of 1 do not count
            dims.pop(0)
        if len(dims) != 1:
            raise ModelLoadError(f"{path}: invalid (non-1D) direction tensor shape ({name} has shape {info.shape})")
        if n_embd == -1:
            n_embd = dims[0]
        elif dims[0] != n_embd:
            raise ModelLoadError(f"{path}: direction tensor {name} has {dims[0]} values, "
                                 f"not the {n_embd} of the previous ones")
        src = np.frombuffer(bytes(info.data), dtype="<f4").astype(np.float32)
        row = rows.setdefault(il, np.zeros(n_embd, dtype=np.float32))
        row += src * strength  # several directions for one layer in one file add up
    data = np.zeros((max(rows), n_embd), dtype=np.float32)
    for il, row in rows.items():
        data[il - 1] = row
    return ControlVector(n_embd, data)


def load_control_vectors(items: Sequence[tuple[str | Path, float]]) -> ControlVector:
    """The files' (path, scale) directions summed (common_control_vector_load); ModelLoadError if any is invalid."""
    if not items:
        raise ModelLoadError("no valid control vector files passed")
    total: ControlVector | None = None
    for path, scale in items:
        cur = load_one(path, scale)
        if total is None:
            total = cur
            continue
        if cur.n_embd != total.n_embd:
            raise ModelLoadError(f"{path}: control vector has n_embd {cur.n_embd}, "
                                 f"not the {total.n_embd} of the previous files")
        n = max(total.data.shape[0], cur.data.shape[0])
        data = np.zeros((n, total.n_embd), dtype=np.float32)
        data[: total.data.shape[0]] += total.data
        data[: cur.data.shape[0]] += cur.data
        total = ControlVector(total.n_embd, data)
    assert total is not None
    return total


def apply_control_vector(net: LlamaModel, cvec: ControlVector | None, start: int = -1, end: int = -1) -> None:
    """Set (or, with None, clear) the vectors `net`'s blocks add (llama_set_adapter_cvec).
    ModelLoadError when the vectors' width is not the model's n_embd."""
    if cvec is None:
        net.control_vector = None
        return
    cfg = net.config
    if cvec.n_embd != cfg.n_embd:
        raise ModelLoadError(f"control vector n_embd ({cvec.n_embd}) does not match the model's ({cfg.n_embd})")
    net.control_vector = cvec.layers(cfg.n_layer, start, end)
