"""Seeded sampling reproduces llama.cpp token for token.

The same logits (NumPy seed 5, 30 steps x 5000 tokens) and the same seed (42) go
through llama.cpp's sampler chains and ours. EXPECTED holds llama.cpp's picks, produced by
`test_expected_values_match_the_oracle` (pytest -m oracle, llama-cpp-python 0.3.36): the
MT19937 streams, float32 softmax sums and candidate orders all have to agree for these
to match.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyllama.sampling import Sampler, SamplingParams

SPEC = {"data_seed": 5, "scale": 1.0, "steps": 30, "n_vocab": 5000, "seed": 42}
EXPECTED: dict[str, list[int]] = {"default": [1969, 2943, 942, 1846, 1152, 4928, 2597, 107, 425, 1782, 1732, 1994, 2229, 2189, 2212, 576, 851, 1607, 3430, 2102, 1827, 2544, 3838, 4466, 2839, 2893, 4192, 4639, 1147, 3476], "full": [3998, 933, 3822, 2923, 2162, 496, 2342, 1640, 716, 3309, 281, 3630, 4699, 2, 4962, 3149, 2970, 39, 107, 2726, 2014, 224, 4893, 1179, 439, 3109, 1871, 4919, 2273, 4317], "xtc": [2572, 2943, 146, 1627, 1152, 4928, 2597, 107, 425, 1981, 1732, 3340, 1430, 2189, 1064, 4300, 122, 1607, 3430, 2102, 1827, 2544, 2065, 3429, 2839, 3866, 4192, 4400, 1147, 2542], "mirostat2": [739, 800, 1878, 2872, 2987, 4928, 4347, 1432, 425, 1549, 1732, 3377, 2176, 2189, 2873, 3332, 2405, 1607, 3430, 514, 1827, 2544, 1410, 3429, 2810, 4081, 4192, 2045, 1147, 1857], "mirostat1": [4430, 1834, 2734, 1270, 4391, 580, 52, 4743, 3896, 2489, 2696, 1960, 4552, 4397, 4750, 3401, 4098, 1759, 3064, 1399, 1150, 957, 2267, 2058, 152, 235, 310, 2611, 939, 180], "dynatemp": [636, 510, 1878, 1944, 4262, 4212, 1021, 1381, 2780, 2071, 3133, 1960, 4475, 2189, 143, 3780, 3979, 1607, 339, 1333, 2799, 1064, 418, 2968, 3463, 735, 1246, 582, 3399, 4991]}

PARAMS = {
    "default": SamplingParams(samplers=["top_k", "top_p", "min_p", "temperature"]),
    "full": SamplingParams(temperature=1.0, samplers=["temperature"]),
    "xtc": SamplingParams(samplers=["top_k", "xtc", "temperature"], xtc_probability=0.5, xtc_threshold=0.1),
    "mirostat2": SamplingParams(mirostat=2),
    "mirostat1": SamplingParams(mirostat=1),
    "dynatemp": SamplingParams(top_k=100, samplers=["top_k", "temperature"], dynatemp_range=0.5),
}


def rows() -> np.ndarray:
    shape = (SPEC["steps"], SPEC["n_vocab"])
    return np.random.default_rng(SPEC["data_seed"]).normal(0, SPEC["scale"], shape).astype(np.float32)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_seeded_tokens_equal_llama_cpp(kind: str) -> None:
    params = PARAMS[kind]
    params.seed = SPEC["seed"]
    sampler = Sampler(params, SPEC["n_vocab"])
    picked = []
    for row in rows():
        token = sampler.sample(row)
        sampler.accept(token)
        picked.append(token)
    assert picked == EXPECTED[kind]


ORACLE_PYTHON = Path("/work/oracle/venv/bin/python")
ORACLE_SCRIPT = r'''import ctypes, json, sys
import numpy as np
import llama_cpp as L
spec = json.loads(sys.argv[1])
rows = np.random.default_rng(spec["data_seed"]).normal(0, spec["scale"], (spec["steps"], spec["n_vocab"])).astype(np.float32)
def chain(kind, seed):
    c = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = lambda s: L.llama_sampler_chain_add(c, s)
    if kind == "default":
        add(L.llama_sampler_init_top_k(40)); add(L.llama_sampler_init_top_p(0.95, 0)); add(L.llama_sampler_init_min_p(0.05, 0))
        add(L.llama_sampler_init_temp_ext(0.8, 0.0, 1.0)); add(L.llama_sampler_init_dist(seed))
    elif kind == "full":
        add(L.llama_sampler_init_temp_ext(1.0, 0.0, 1.0)); add(L.llama_sampler_init_dist(seed))
    elif kind == "xtc":
        add(L.llama_sampler_init_top_k(40)); add(L.llama_sampler_init_xtc(0.5, 0.1, 0, seed))
        add(L.llama_sampler_init_temp_ext(0.8, 0.0, 1.0)); add(L.llama_sampler_init_dist(seed))
    elif kind == "mirostat2":
        add(L.llama_sampler_init_temp(0.8)); add(L.llama_sampler_init_mirostat_v2(seed, 5.0, 0.1))
    elif kind == "mirostat1":
        add(L.llama_sampler_init_temp(0.8)); add(L.llama_sampler_init_mirostat(spec["n_vocab"], seed, 5.0, 0.1, 100))
    elif kind == "dynatemp":
        add(L.llama_sampler_init_top_k(100)); add(L.llama_sampler_init_temp_ext(0.8, 0.5, 1.0)); add(L.llama_sampler_init_dist(seed))
    return c
out = {}
for kind in spec["kinds"]:
    c = chain(kind, spec["seed"])
    toks = []
    n = spec["n_vocab"]
    for r in rows:
        data = (L.llama_token_data * n)()
        for i in range(n):
            data[i].id = i; data[i].logit = float(r[i]); data[i].p = 0.0
        arr = L.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        L.llama_sampler_apply(c, ctypes.byref(arr))
        t = arr.data[arr.selected].id
        L.llama_sampler_accept(c, t)
        toks.append(t)
    out[kind] = toks
    L.llama_sampler_free(c)
print(json.dumps(out))
'''


@pytest.mark.oracle
def test_expected_values_match_the_oracle() -> None:
    if not ORACLE_PYTHON.exists():
        pytest.skip("llama-cpp-python oracle not built")
    spec = {**SPEC, "kinds": list(EXPECTED)}
    out = subprocess.run(
        [str(ORACLE_PYTHON), "-c", ORACLE_SCRIPT, json.dumps(spec)], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == EXPECTED
