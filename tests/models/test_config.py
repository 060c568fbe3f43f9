"""Per-architecture hyper-parameters and llama_context's RoPE rules (config.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pyllama.config import RopeParams, finalize_rope, read_config
from pyllama.errors import ModelLoadError
from pyllama.gguf_file import read_gguf
from tests.models import synth


def rope(**kw: object) -> RopeParams:
    r = RopeParams(n_rot=64, freq_base=10000.0, freq_base_train=10000.0, n_ctx_orig=4096)
    for k, v in kw.items():
        setattr(r, k, v)
    finalize_rope(r)
    return r


def test_missing_type_means_linear_and_none_ignores_the_factor() -> None:
    assert rope(freq_scale_train=0.5).freq_scale == 0.5
    assert rope(freq_scale_train=0.5, scaling_type_train="none").freq_scale == 1.0


def test_yarn_turns_on_extrapolation_and_cancels_ggmls_mscale() -> None:
    r = rope(freq_scale_train=0.25, scaling_type_train="yarn", rope_attn_factor=1.5)
    assert r.ext_factor == 1.0
    # mscale(4) / (1 + 0.1 ln 4) == 1, times the GGUF's attn_factor
    assert math.isclose(r.attn_factor, 1.5, rel_tol=1e-9)
    finalize_rope(r, yarn_ext_factor=0.0, yarn_attn_factor=0.8)
    assert r.ext_factor == 0.0 and math.isclose(r.attn_factor, 0.8 * 1.5)


def test_overrides_start_from_the_gguf_values_each_time() -> None:
    r = rope(freq_scale_train=0.5)
    finalize_rope(r, freq_base=500.0, freq_scale=0.125)
    assert (r.freq_base, r.freq_scale) == (500.0, 0.125)
    finalize_rope(r)
    assert (r.freq_base, r.freq_scale) == (10000.0, 0.5)
    with pytest.raises(ModelLoadError, match="unknown RoPE scaling type"):
        finalize_rope(r, scaling_type="ntk")


@pytest.mark.parametrize(
    ("name", "swa", "window"),
    [("gemma2", (True, False), 8), ("gemma3", (True, False), 8), ("olmo2", (True, False), 8), ("phi3", (), 0),
     ("llama", (), 0)],
)
def test_sliding_window_layers(name: str, swa: tuple[bool, ...], window: int, tmp_path: Path) -> None:
    cfg = read_config(read_gguf(synth.write_model(name, tmp_path / "m.gguf")))
    assert cfg.swa_layers == swa and cfg.sliding_window == window


def test_gemma3_defaults_and_swa_rope(tmp_path: Path) -> None:
    cfg = read_config(read_gguf(synth.write_model("gemma3", tmp_path / "m.gguf")))
    assert cfg.rope.freq_base == 100000.0 and cfg.rope_swa().freq_base == 1000.0
    assert cfg.rope.neox and cfg.final_softcap == 0.0


def test_encoder_and_granite_keys(tmp_path: Path) -> None:
    bert = read_config(read_gguf(synth.write_model("bert", tmp_path / "b.gguf")))
    assert not bert.causal and bert.pooling == "mean" and bert.n_token_types == 2
    granite = read_config(read_gguf(synth.write_model("granite", tmp_path / "g.gguf")))
    assert (granite.logit_scale, granite.residual_scale, granite.embedding_scale) == (2.5, 0.5, 3.0)


def test_rope_overrides_from_flags() -> None:
    """One reading of the RoPE flags for the CLI (argparse names) and the server's model spec."""
    from pyllama.engine import RopeOverrides

    assert RopeOverrides.from_flags({}) is None
    assert RopeOverrides.from_flags({"rope_scaling": None, "rope_freq_base": None, "ctx_size": 512}) is None
    o = RopeOverrides.from_flags({"rope_scaling": "yarn", "rope_scale": 4.0, "rope_freq_base": 5e5, "yarn_orig_ctx": 2048,
                                  "yarn_beta_fast": 16.0})
    assert o == RopeOverrides(scaling_type="yarn", freq_base=5e5, freq_scale=0.25, yarn_orig_ctx=2048, yarn_beta_fast=16.0)
    explicit = RopeOverrides.from_flags({"rope_scale": 4.0, "rope_freq_scale": 0.5})  # --rope-freq-scale wins
    assert explicit is not None and explicit.freq_scale == 0.5
