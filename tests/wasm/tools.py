"""Helpers shared by the wasm (Node) and browser (Chromium) tests.

Missing system tools are a hard failure on CI (CI=true: .ci/system-deps must have installed
them, so their absence is a broken machine) and a skip with the reason on a dev machine.
The offline Pyodide directory is assembled once per session by wasm/build.py (downloads
are cached in ~/.cache/pyllama/wasm) and the pyllama wheel is always rebuilt from the
current source, so the tests exercise the code in this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WASM_DIST = REPO / "wasm" / "dist"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def unavailable(reason: str) -> None:
    """Fail on CI, skip elsewhere."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: .ci/system-deps should have installed it)", pytrace=False)
    pytest.skip(reason)


def require_executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"`{name}` is not installed")
    assert path is not None
    return path


def build_dist() -> Path:
    """Assemble wasm/dist (cached downloads) and rebuild the pyllama wheel from this checkout."""
    require_executable("node")
    if not (WASM_DIST / "pyodide.asm.wasm").exists():
        require_executable("npm")
    res = subprocess.run(
        [sys.executable, str(REPO / "wasm" / "build.py"), "--out", str(WASM_DIST)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if res.returncode != 0:
        pytest.fail(f"wasm/build.py failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}", pytrace=False)
    return WASM_DIST
