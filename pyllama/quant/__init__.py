"""Dequantization of ggml tensor types into float32, and the packed compute layouts.

`dequantize` turns a tensor's raw bytes into a float32 array (bit-identical to
`gguf.quants.dequantize`). `repack` turns them into a `PackedTensor` that keeps the
weights small and multiplies by them tile by tile (layout.py, grouped.py say why the
layouts look the way they do; matmul.py holds the BLAS and einsum kernels).

One module per ggml type family turns raw blocks into codes and scales with whole-array
NumPy expressions (bits.py reads the packed bit fields): float.py (F32, F16, BF16),
legacy.py (Q4_0..Q8_0), kquants.py (Q2_K..Q6_K), iquants.py (IQ4_NL, IQ4_XS).
`python -m pyllama.quant.bench` measures all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast, get_args

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from pyllama.errors import ModelLoadError
from pyllama.quant import float as _float
from pyllama.quant import iquants, kquants, legacy
from pyllama.quant.grouped import NibbleCodes, ScaledCodes
from pyllama.quant.layout import BlockArrays, PackedTensor
from pyllama.quant.pages import release_file_pages

__all__ = [
    "DEFAULT_PACKING",
    "NIBBLE_TYPES",
    "PACK_LAYOUTS",
    "SUPPORTED_TYPES",
    "PackLayout",
    "PackedTensor",
    "checked_layout",
    "dequantize",
    "repack",
]

T = GGMLQuantizationType
U8 = np.ndarray[Any, np.dtype[np.uint8]]
F32 = np.ndarray[Any, np.dtype[np.float32]]

_FLOAT_TYPES: dict[GGMLQuantizationType, Callable[[U8, int, int], PackedTensor]] = {
    T.F32: _float.f32,
    T.F16: _float.f16,
    T.BF16: _float.bf16,
}
_BLOCK_TYPES: dict[GGMLQuantizationType, Callable[[U8], BlockArrays]] = {
    T.Q4_0: legacy.q4_0,
    T.Q4_1: legacy.q4_1,
    T.Q5_0: legacy.q5_0,
    T.Q5_1: legacy.q5_1,
    T.Q8_0: legacy.q8_0,
    T.Q2_K: kquants.q2_k,
    T.Q3_K: kquants.q3_k,
    T.Q4_K: kquants.q4_k,
    T.Q5_K: kquants.q5_k,
    T.Q6_K: kquants.q6_k,
    T.IQ4_NL: iquants.iq4_nl,
    T.IQ4_XS: iquants.iq4_xs,
}

SUPPORTED_TYPES: frozenset[GGMLQuantizationType] = frozenset(_FLOAT_TYPES) | frozenset(_BLOCK_TYPES)

# 4-bit types that can be packed two codes per byte, with the offset their codes carry.
NIBBLE_TYPES: dict[GGMLQuantizationType, int] = {T.Q4_0: 8, T.Q4_1: 0, T.Q4_K: 0}

# How repack() holds block types (bytes per weight for Q4_1 / Q4_K / Q8_0), measured on
# SmolLM2 Q4_1 (`pyllama bench --weights packed -p 256 -n 32`, docs/performance.md):
# - "int8" (default): one int8 per weight, float32 scales (1.25 / 1.25 / 1.125): the
#   fastest; weights 157 MiB, peak RSS ~245 MiB, tg as before this layout choice existed.
# - "nibbles": 4-bit types two codes per byte, float16 d where ggml makes it exact and
#   non-negative (Q4_1, Q8_0), float32 otherwise (0.6875 / 0.75 / 1.0625): weights 98 MiB,
#   peak RSS 184 MiB, the same results as "int8" (identical float32 codes into the same
#   matmul), but unpacking two nibbles per byte costs ~45% more than one int8 cast per
#   weight: tg -19%.
# - "compact": nibbles, and scales/mins kept float16 where exact (0.625 / 0.75 / 1.0625,
#   the files' own sizes), but widening signed ones makes 4-bit matmuls ~1.5x slower.
# Types whose scales are the file's float16 d, non-negative by construction in ggml
# (amax / 127, (max - min) / 15): held float16 by the lean layout and widened per tile
# with a bit trick (grouped._as_float32). Not by "int8": that costs SmolLM2's one-token
# Q8_0 head 6.25 -> 6.7 ms (1.2% of tg) for 1.7 MiB, and Q4_1's d ~4% of tg for 6.3 MiB.
SMALL_SCALE_TYPES: dict[str, frozenset[GGMLQuantizationType]] = {
    "int8": frozenset(),
    "nibbles": frozenset({T.Q8_0, T.Q4_1, T.Q5_1}),
    "compact": frozenset(),  # narrows everything exact at the end instead (signed: slow)
}
PackLayout = Literal["int8", "nibbles", "compact"]
PACK_LAYOUTS: tuple[str, ...] = get_args(PackLayout)
DEFAULT_PACKING: PackLayout = "int8"


def checked_layout(layout: str) -> PackLayout:
    if layout in PACK_LAYOUTS:
        return cast(PackLayout, layout)
    raise ValueError(f"unknown packing layout {layout!r} (expected one of {', '.join(PACK_LAYOUTS)})")


# dequantize() converts big tensors this many weights at a time, so the int8 codes and
# bit-twiddling temporaries never exceed a few tens of MB (Gemma's embedding is 168M weights).
_CHUNK_WEIGHTS = 1 << 22


def _check(data: U8, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> tuple[int, int]:
    """Validate and return the 2-D (n_rows, n_cols) view every layout works on."""
    if qtype not in SUPPORTED_TYPES:
        names = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ModelLoadError(f"tensor type {qtype.name} is not supported (supported: {names})")
    if not shape or any(d <= 0 for d in shape):
        raise ModelLoadError(f"{qtype.name} tensor has invalid shape {shape}")
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_cols = shape[-1]
    n_rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if n_cols % block_size:
        raise ModelLoadError(
            f"{qtype.name} tensor row length {n_cols} is not a multiple of its block size {block_size}"
        )
    expected = n_rows * (n_cols // block_size) * type_size
    if data.dtype != np.uint8 or data.size != expected:
        raise ModelLoadError(
            f"{qtype.name} tensor of shape {shape} needs {expected} bytes, got {data.size} ({data.dtype})"
        )
    return n_rows, n_cols


def repack(
    data: U8, qtype: GGMLQuantizationType, shape: tuple[int, ...], *, layout: PackLayout = DEFAULT_PACKING
) -> PackedTensor:
    """Raw bytes of a tensor -> its packed compute layout, viewed as (rows, shape[-1]).

    `layout` trades memory for speed, see PackLayout (a model's is chosen at load).
    Block types are decoded one tile of rows at a time straight into the final arrays.
    """
    n_rows, n_cols = _check(data, qtype, shape)
    data = np.asarray(data)
    if qtype in _FLOAT_TYPES:
        return _FLOAT_TYPES[qtype](data.reshape(-1), n_rows, n_cols)
    layout = checked_layout(layout)
    decode = _BLOCK_TYPES[qtype]
    type_size = GGML_QUANT_SIZES[qtype][1]
    rows = data.reshape(n_rows, -1)
    probe = decode(rows[:1].reshape(-1, type_size))  # the group size and whether there is a bias
    has_bias = probe.bias is not None
    small_scales = qtype in SMALL_SCALE_TYPES[layout]
    packed: NibbleCodes | ScaledCodes
    if layout != "int8" and qtype in NIBBLE_TYPES:
        packed = NibbleCodes((n_rows, n_cols), probe.group, has_bias, NIBBLE_TYPES[qtype], small_scales)
    else:
        packed = ScaledCodes((n_rows, n_cols), probe.group, has_bias, small_scales)
    n_groups = n_cols // probe.group
    for t, r0, r1 in packed.tile_bounds():
        arrays = decode(rows[r0:r1].reshape(-1, type_size))
        bias = None if arrays.bias is None else arrays.bias.reshape(r1 - r0, n_groups)
        packed.fill(t, arrays.codes.reshape(r1 - r0, n_groups, probe.group), arrays.scale.reshape(r1 - r0, n_groups), bias)
        # The tile's file pages are read: drop them now, not after the whole tensor (Gemma's
        # 160 MiB embedding held them all at once: load peak 411 MiB, resident after 364).
        release_file_pages(rows[r0:r1])
    packed.finish(narrow=layout == "compact")
    return packed


def _dequantize_2d(data: U8, qtype: GGMLQuantizationType, out: F32) -> None:
    """Block types straight from their BlockArrays, in block order (no transposed layout)."""
    n_rows, n_cols = out.shape
    if qtype in _FLOAT_TYPES:
        _FLOAT_TYPES[qtype](data.reshape(-1), n_rows, n_cols).dequantize_into(out)
        return
    arrays = _BLOCK_TYPES[qtype](data.reshape(-1, GGML_QUANT_SIZES[qtype][1]))
    n_groups = arrays.scale.size
    o3 = out.reshape(n_groups, arrays.group)
    np.multiply(arrays.codes.reshape(n_groups, arrays.group), arrays.scale.reshape(n_groups, 1), out=o3)
    if arrays.bias is not None:
        np.add(o3, arrays.bias.reshape(n_groups, 1), out=o3)


def dequantize(data: U8, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> F32:
    """Raw bytes of a tensor -> float32 array of `shape` (NumPy order)."""
    n_rows, n_cols = _check(data, qtype, shape)
    data = np.asarray(data).reshape(n_rows, -1)
    out = np.empty((n_rows, n_cols), dtype=np.float32)
    step = max(1, _CHUNK_WEIGHTS // n_cols)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        _dequantize_2d(data[start:stop], qtype, out[start:stop])
    return out.reshape(shape)
