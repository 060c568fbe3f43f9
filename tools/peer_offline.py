"""Put offline stand-ins for the files llama.cpp's test_speculative and test_lora download.

    .venv/bin/python tools/peer_offline.py [--suite $REF/server-tests] [--model $LOCAL_MODEL]

llama.cpp's server test suite (../shared/peer-suite/) substitutes a local GGUF for every
*model* it names, but unit/test_speculative.py and unit/test_lora.py also fetch a file with
`utils.download_file(URL)`: a draft model and a LoRA adapter for the suite's
stories15M_MOE. `download_file` skips the download when `./tmp/<last URL segment>`
already exists (the suite runs from its own folder), so this tool writes there:

- `tmp/stories15M-q4_0.gguf` (draft model): a symbolic link to the substituted model
  itself. A draft must share the target's vocabulary, and SmolLM2 drafting for SmolLM2
  (self-drafting) is the one draft with that vocabulary on this machine; llama-server
  accepts it like any draft model.
- `tmp/moe_shakespeare15M.gguf` (LoRA adapter): a synthetic adapter for the substituted
  model, written with the gguf writer: a rank-8 A/B pair (F32, alpha 8, fixed seed) for
  every attention and feed-forward matrix of every layer, each pair's delta B @ A scaled
  to `--strength` times its base matrix's Frobenius norm, so scales 0.3, 0.7 and 1.0
  give visibly different text. It cannot be the suite's adapter: that one adapts
  stories15M_MOE's tensors, which SmolLM2 does not have.

Existing files are replaced only with --force (a real download left there is kept).
Why the suite's assertions still fail on these stand-ins is in docs/server.md, "llama.cpp's
test suite"; the outcomes of both servers are in tools/peer_offline_outcomes.tsv.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np

RANK = 8
ALPHA = 8.0
ADAPTED = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# (test file, the URL constant it passes to download_file)
DOWNLOADS = {
    "draft": ("unit/test_speculative.py", "MODEL_DRAFT_FILE_URL"),
    "lora": ("unit/test_lora.py", "LORA_FILE_URL"),
}


def cache_name(suite: Path, kind: str) -> str:
    """The file name download_file gives the test's URL (its last segment)."""
    test_file, const = DOWNLOADS[kind]
    text = (suite / test_file).read_text(encoding="utf-8")
    m = re.search(rf'^{const}\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if m is None:
        raise SystemExit(f"{test_file}: {const} not found (has the suite changed?)")
    return m.group(1).split("/").pop()


def write_adapter(model: Path, out: Path, strength: float, seed: int = 16) -> int:
    """A random LoRA adapter for `model` (see the module doc); returns the number of pairs."""
    base = gguf.GGUFReader(str(model))
    arch_field = base.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), arch)
    w.add_type("adapter")
    w.add_name("peer_offline synthetic adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", ALPHA)
    n = 0
    for t in base.tensors:
        parts = t.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in ADAPTED or parts[3] != "weight":
            continue
        values: np.ndarray[Any, Any] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        n_out, n_in = values.shape
        a = rng.standard_normal((RANK, n_in)).astype(np.float32)
        b = rng.standard_normal((n_out, RANK)).astype(np.float32)
        delta = np.linalg.norm(b @ a) * (ALPHA / RANK)
        k = np.float32(np.sqrt(strength * float(np.linalg.norm(values)) / delta))
        w.add_tensor(f"{t.name}.lora_a", a * k)
        w.add_tensor(f"{t.name}.lora_b", b * k)
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n


def main(argv: list[str] | None = None) -> int:
    ref = os.environ.get("REF", "/work/peer")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, default=Path(os.environ.get("PEER_SUITE_DIR", f"{ref}/server-tests")),
                   help="the patched copy of llama.cpp's tools/server/tests (default: $REF/server-tests)")
    p.add_argument("--model", type=Path,
                   default=Path(os.environ.get("LOCAL_MODEL", f"{ref}/models/SmolLM2-135M-Instruct.Q4_1.gguf")),
                   help="the GGUF the suite substitutes for every model (default: $LOCAL_MODEL)")
    p.add_argument("--strength", type=float, default=0.5,
                   help="each adapted matrix's delta at scale 1, relative to the matrix (default: 0.5)")
    p.add_argument("--force", action="store_true", help="replace files already in the suite's tmp/")
    args = p.parse_args(argv)
    model = args.model.resolve()
    if not model.is_file():
        print(f"model not found: {model}", file=sys.stderr)
        return 1
    tmp = args.suite / "tmp"
    tmp.mkdir(exist_ok=True)
    draft = tmp / cache_name(args.suite, "draft")
    lora = tmp / cache_name(args.suite, "lora")
    for path in (draft, lora):
        if (path.exists() or path.is_symlink()) and not args.force:
            print(f"{path}: exists, kept (--force replaces it)")
            continue
        if path.exists() or path.is_symlink():
            path.unlink()
        if path == draft:
            path.symlink_to(model)
            print(f"{path} -> {model} (self-drafting)")
        else:
            n = write_adapter(model, path, args.strength)
            print(f"{path}: {n} LoRA pairs for {model.name}, rank {RANK}, strength {args.strength:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
