"""Record llama.cpp's ids for the synthetic vocabularies into data/synthetic_expected.json.

Run: .venv/bin/python -m tests.tokenizer.record_synthetic [/path/to/oracle/python]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.tokenizer.synthetic import TEXTS, all_specs, write_gguf

ORACLE_PYTHON = "/work/oracle/venv/bin/python"
DATA = Path(__file__).parent / "data" / "synthetic_expected.json"


def run_oracle(python: str = ORACLE_PYTHON) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        specs = all_specs()
        reqs = [{"path": str(write_gguf(s, Path(d) / f"{s.name}.gguf")), "texts": TEXTS} for s in specs]
        script = Path(__file__).parent / "oracle_tokenize.py"
        proc = subprocess.run(
            [python, str(script)],
            input=json.dumps(reqs),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"oracle failed: {proc.stderr[-2000:]}")
        results = json.loads(proc.stdout)
    return {s.name: r for s, r in zip(specs, results, strict=True)}


def main() -> None:
    results = run_oracle(*sys.argv[1:2])
    lines = ['{"texts": ' + json.dumps(TEXTS, ensure_ascii=False) + ', "results": {']
    for i, (name, res) in enumerate(results.items()):
        sep = "," if i + 1 < len(results) else ""
        lines.append(f"{json.dumps(name)}: {json.dumps(res, ensure_ascii=False, separators=(',', ':'))}{sep}")
    lines.append("}}")
    DATA.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {DATA}")


if __name__ == "__main__":
    main()
