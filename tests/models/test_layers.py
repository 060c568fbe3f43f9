"""models/layers.py pieces that the parity tests do not isolate: quantized expert slicing, routing,
and GELU as ggml computes it (both kernel sets use its table)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import quantize

from pyllama.gguf_file import TensorInfo, read_gguf
from pyllama.linear import Linear
from pyllama.models.base import Weights
from pyllama.models.layers import MixtureOfExperts, expert_linears
from pyllama.numerics import gelu
from pyllama.quant import dequantize


@pytest.mark.parametrize("mode", ["dense", "packed"])
@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0])
def test_quantized_expert_slices(mode: str, qtype: gguf.GGMLQuantizationType, tmp_path: Path) -> None:
    n_expert, n_out, n_in = 3, 8, 256
    x = np.random.default_rng(0).standard_normal((n_expert, n_out, n_in)).astype(np.float32)
    path = tmp_path / "experts.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.ffn_up_exps.weight", quantize(x, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(path)
    info = g.tensors["blk.0.ffn_up_exps.weight"]
    whole = dequantize(info.data, info.ggml_type, info.shape)
    experts = expert_linears(Weights(g, "packed" if mode == "packed" else "dense"), "blk.0.ffn_up_exps.weight")
    assert len(experts) == n_expert
    for e, lin in enumerate(experts):
        assert np.array_equal(lin.dense_weight(), whole[e])


def test_routing_picks_top_k_and_renormalises() -> None:
    eye = np.eye(4, dtype=np.float32)

    def lin(a: np.ndarray) -> Linear:
        data = np.ascontiguousarray(a, dtype=np.float32).view(np.uint8).reshape(-1)
        return Linear(TensorInfo("t", gguf.GGMLQuantizationType.F32, a.shape, 0, data.size, data))

    router = lin(np.diag([1.0, 2.0, 3.0, 4.0]).astype(np.float32))
    moe = MixtureOfExperts(router, [lin(eye)] * 4, None, [lin(eye)] * 4, n_used=2)
    top, weights = moe.route(np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32))
    assert top.tolist() == [[3, 2]]
    p = np.exp([0.0, 0.0, 3.0, 4.0])
    assert np.allclose(weights, [[p[3] / (p[2] + p[3]), p[2] / (p[2] + p[3])]])


def test_gelu_is_ggmls_f16_table() -> None:
    x = np.array([-20.0, -10.0, -1.0, 0.0, 0.5, 1.0, 3.0, 10.0, 12.0], dtype=np.float32)
    y = gelu(x)
    assert y[0] == 0.0 and y[-1] == 12.0 and y[3] == 0.0
    exact = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert np.allclose(y[2:7], exact[2:7], rtol=2e-3)
    assert np.array_equal(y[2:7], y[2:7].astype(np.float16).astype(np.float32))  # f16 table values
