"""Build a llama-server download cache (Hugging Face's hub layout) holding one local GGUF
under the repository names llama.cpp's server test suite downloads, so its router tests run
offline: llama-server and pyllama-server both list a cache's GGUFs as router models named
`org/repo:TAG` (asgi/hf_cache.py). Each entry is a `snapshots/COMMIT/FILE` link to a
`blobs/` link to the model, as `hf download` leaves them (a DELETE /models removes links only).

    python tools/peer_cache.py CACHE_DIR MODEL.gguf
    LLAMA_CACHE=CACHE_DIR PEER_SERVER_CMD=.../pyllama-server PORT=8480 \\
        bash ../shared/peer-suite/run.sh unit/test_router.py

Rerun it before each run: test_router_delete_model removes one of the entries.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

# (repository, file) as on the hub; the file name's tag is the model's ":TAG"
SUITE_MODELS = (
    ("ggml-org/tinygemma3-GGUF", "tinygemma3-Q8_0.gguf"),
    ("ggml-org/test-model-stories260K", "stories260K-F32.gguf"),
    ("ggml-org/test-model-stories260K-infill", "stories260K-infill-F32.gguf"),
    ("ggml-org/test-model-router-download", "test-model-router-download-F16.gguf"),
)
COMMIT = "0" * 39 + "1"


def add(cache: Path, repo: str, filename: str, model: Path) -> Path:
    """Link `model` into `cache` as `repo`'s `filename`; returns the snapshot entry."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / hashlib.sha256(f"{repo}/{filename}".encode()).hexdigest()
    entry = folder / "snapshots" / COMMIT / filename
    for path in (blob, entry):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
    blob.symlink_to(model.resolve())
    entry.symlink_to(os.path.relpath(blob, entry.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return entry


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    cache, model = Path(argv[1]), Path(argv[2])
    for repo, filename in SUITE_MODELS:
        print(add(cache, repo, filename, model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
