"""Record llama.cpp's answers for the synthetic vocabularies.

Writes data/synthetic_expected.json.gz (ids of every text, llama_detokenize results) and
data/synthetic_special_ids.json (special ids, EOG set, non-normal token attributes).
Run: .venv/bin/python -m tests.tokenizer.record_synthetic [/path/to/oracle/python]
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.tokenizer.synthetic import TEXTS, all_specs, write_gguf

ORACLE_PYTHON = "/work/oracle/venv/bin/python"
DATA = Path(__file__).parent / "data" / "synthetic_expected.json.gz"
SPECIAL_IDS = Path(__file__).parent / "data" / "synthetic_special_ids.json"


def _oracle(script: str, payload: Any, python: str) -> Any:
    proc = subprocess.run(
        [python, str(Path(__file__).parent / script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"oracle failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def run_oracle(python: str = ORACLE_PYTHON) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tokenize/detokenize results, special ids) per synthetic vocabulary, from llama.cpp."""
    with tempfile.TemporaryDirectory() as d:
        specs = all_specs()
        paths = [str(write_gguf(s, Path(d) / f"{s.name}.gguf")) for s in specs]
        results = _oracle("oracle_tokenize.py", [{"path": p, "texts": TEXTS} for p in paths], python)
        ids = _oracle(
            "oracle_special_ids.py", [[s.name, p] for s, p in zip(specs, paths, strict=True)], python
        )
    return {s.name: r for s, r in zip(specs, results, strict=True)}, ids


def main() -> None:
    results, ids = run_oracle(*sys.argv[1:2])
    text = json.dumps({"texts": TEXTS, "results": results}, ensure_ascii=False, separators=(",", ":"))
    DATA.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    items = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in ids.items()]
    SPECIAL_IDS.write_text("{\n" + ",\n".join(items) + "\n}\n", encoding="utf-8")
    print(f"wrote {DATA} and {SPECIAL_IDS}")


if __name__ == "__main__":
    main()
