"""tools/peer_offline.py: the stand-ins for the files llama.cpp's test_speculative and
test_lora download are where the suite's download_file looks, and the adapter is a valid
LoRA for the substituted model that changes each matrix by the asked strength."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np

from pyllama.lora import LoraAdapter, check_adapter_file

_SPEC = importlib.util.spec_from_file_location("peer_offline", Path(__file__).resolve().parents[2] / "tools" / "peer_offline.py")
assert _SPEC is not None and _SPEC.loader is not None
peer_offline = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(peer_offline)


def fake_suite(root: Path) -> Path:
    """The two lines of the suite the tool reads (its URL constants), as in llama.cpp."""
    (root / "unit").mkdir(parents=True)
    (root / "unit" / "test_speculative.py").write_text(
        'MODEL_DRAFT_FILE_URL = "https://huggingface.co/ggml-org/tiny-llamas/resolve/main/stories15M-q4_0.gguf"\n')
    (root / "unit" / "test_lora.py").write_text(
        'LORA_FILE_URL = "https://huggingface.co/ggml-org/stories15M_MOE/resolve/main/moe_shakespeare15M.gguf"\n')
    return root


def test_stand_ins_in_the_download_cache(smollm2_path: Path, tmp_path: Path) -> None:
    suite = fake_suite(tmp_path / "suite")
    assert peer_offline.main(["--suite", str(suite), "--model", str(smollm2_path), "--strength", "0.25"]) == 0
    draft = suite / "tmp" / "stories15M-q4_0.gguf"
    assert draft.resolve() == smollm2_path.resolve()  # self-drafting
    adapter_path = suite / "tmp" / "moe_shakespeare15M.gguf"
    check_adapter_file(adapter_path, smollm2_path)  # names and shapes fit SmolLM2
    adapter = LoraAdapter.read(adapter_path)
    assert len(adapter.pairs) == 30 * 7
    name = "blk.29.ffn_down.weight"
    base = next(t for t in gguf.GGUFReader(str(smollm2_path)).tensors if t.name == name)
    w = gguf.quants.dequantize(base.data, base.tensor_type)
    pair = adapter.pairs[name]
    delta = adapter.factor(name) * (pair.b @ pair.a)
    np.testing.assert_allclose(np.linalg.norm(delta) / np.linalg.norm(w), 0.25, rtol=1e-3)
    # a second run keeps what is there (a real download included) unless --force
    adapter_path.write_bytes(b"kept")
    assert peer_offline.main(["--suite", str(suite), "--model", str(smollm2_path)]) == 0
    assert adapter_path.read_bytes() == b"kept"
    assert peer_offline.main(["--suite", str(suite), "--model", str(smollm2_path), "--force"]) == 0
    assert LoraAdapter.read(adapter_path, load=False).arch == "llama"
