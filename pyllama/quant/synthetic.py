"""Random but valid raw tensor bytes for every supported ggml type (tests, benchmarks)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

T = GGMLQuantizationType

# Byte offsets of the float16 scale fields (d, dmin) inside one block of each type.
F16_FIELDS: dict[GGMLQuantizationType, tuple[int, ...]] = {
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q8_0: (0,),
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
    T.IQ4_NL: (0,),
    T.IQ4_XS: (0,),
}

ALL_TYPES = [T.F32, T.F16, T.BF16, *F16_FIELDS]


def random_tensor_bytes(
    rng: np.random.Generator, qtype: GGMLQuantizationType, shape: tuple[int, ...]
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Uniformly random block bytes, with every f16 scale field overwritten by a finite value.

    F32 and BF16 keep fully random bits (NaN/inf included: tests compare with equal_nan).
    """
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block_size
    raw = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    if qtype == T.F16:
        vals = rng.uniform(-4, 4, n_blocks).astype(np.float16)
        raw = vals.view(np.uint8).reshape(n_blocks, 2)
    for off in F16_FIELDS.get(qtype, ()):
        scale = rng.uniform(-0.1, 0.1, n_blocks).astype(np.float16)
        raw[:, off : off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)
