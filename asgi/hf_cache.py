"""llama-server's download cache, read as a model source for router mode (never written to,
except for `DELETE /models`, which removes a cached model as llama-server does).

llama-server keeps what `-hf` downloads in Hugging Face's hub layout
(`models--ORG--REPO/refs/main` holding a commit hash, `snapshots/COMMIT/FILE.gguf`) under
the first of `LLAMA_CACHE`, `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
`XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`; in router mode it lists
every cached GGUF as a model named `ORG/REPO:TAG` (the quantization tag at the end of the
file name, upper-cased). This module reads that cache exactly as llama.cpp's
common/hf-cache.cpp and common/download.cpp do (`get_cached_files`,
`common_list_cached_models`, `common_download_resolve_path`, `common_download_remove`),
so a model llama-server downloaded is served by pyllama-server under the same id, offline.
pyllama itself never downloads.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("asgi.settings")

_SPLIT = re.compile(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", re.IGNORECASE)
_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
_HEX40 = re.compile(r"^[0-9A-Fa-f]{40}$")
_SIDECARS = ("mmproj", "mtp-", "eagle3-", "dflash-", "dspark-")


@dataclass(frozen=True)
class CachedFile:
    repo_id: str  # "org/repo"
    path: str  # inside the snapshot, "/"-separated
    local_path: Path


def cache_directory() -> Path:
    """llama-server's cache folder (hf_cache::get_cache_directory), read from the environment
    each time so a test can point one server at its own cache."""
    for var, sub in (("LLAMA_CACHE", ""), ("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""),
                     ("HF_HOME", "hub"), ("XDG_CACHE_HOME", "huggingface/hub"), ("HOME", ".cache/huggingface/hub")):
        base = os.environ.get(var)
        if base:
            return Path(base) / sub if sub else Path(base)
    return Path.home() / ".cache" / "huggingface" / "hub"


def valid_repo_id(repo_id: str) -> bool:
    """`org/repo`: word characters, with `/`, `.`, `-` only between them, exactly one `/`."""
    if not repo_id or len(repo_id) > 256:
        return False
    slashes, special = 0, True
    for c in repo_id:
        if c.isascii() and (c.isalnum() or c == "_"):
            special = False
        elif c in "/.-":
            if special:
                return False
            slashes += c == "/"
            special = True
        else:
            return False
    return not special and slashes == 1


def _cached_ref(repo: Path) -> str:
    """The snapshot a repository's `refs/main` names (another ref when there is no main)."""
    refs = repo / "refs"
    if not refs.is_dir():
        return ""
    fallback = ""
    for entry in sorted(refs.iterdir()):
        if not entry.is_file():
            continue
        try:
            lines = entry.read_text("utf-8", "replace").splitlines()
        except OSError:
            continue
        commit = lines[0] if lines else ""
        if not _HEX40.match(commit):
            continue
        if entry.name == "main":
            return commit
        fallback = fallback or commit
    return fallback


def cached_files(repo_id: str = "") -> list[CachedFile]:
    """Every file of every cached repository's current snapshot (or of `repo_id` only)."""
    root = cache_directory()
    if not root.is_dir() or (repo_id and not valid_repo_id(repo_id)):
        return []
    files: list[CachedFile] = []
    try:
        repos = sorted(root.iterdir())
    except OSError:
        return []
    for repo in repos:
        if not repo.is_dir() or not repo.name.startswith("models--") or not (repo / "snapshots").exists():
            continue
        name = repo.name[len("models--"):].replace("--", "/")
        if not valid_repo_id(name) or (repo_id and name != repo_id):
            continue
        commit = _cached_ref(repo)
        snapshot = repo / "snapshots" / commit
        if not commit or not snapshot.is_dir():
            continue
        for dirpath, _dirs, names in os.walk(snapshot, followlinks=False):
            for file_name in sorted(names):
                local = Path(dirpath) / file_name
                files.append(CachedFile(name, local.relative_to(snapshot).as_posix(), local))
    return files


def split_info(path: str) -> tuple[str, str, int, int]:
    """(prefix, TAG, shard index, shard count) of a GGUF file name, as get_gguf_split_info."""
    if not path.endswith(".gguf"):
        return "", "", 0, 0
    prefix, index, count = path[: -len(".gguf")], 1, 1
    split = _SPLIT.match(prefix)
    if split:
        prefix, index, count = split.group(1), int(split.group(2)), int(split.group(3))
    tag = _TAG.search(prefix)
    return prefix, tag.group(1).upper() if tag else "", index, count


def list_cached_models() -> list[str]:
    """`org/repo:TAG` for each cached GGUF that is a model's first (or only) file."""
    seen: list[str] = []
    for f in cached_files():
        prefix, tag, index, _count = split_info(f.path)
        if index != 1 or not tag or any(s in prefix for s in _SIDECARS):
            continue
        name = f"{f.repo_id}:{tag}"
        if name not in seen:
            seen.append(name)
    return seen


def split_repo_tag(hf_repo: str) -> tuple[str, str]:
    """`org/repo:Q8_0` -> ("org/repo", "Q8_0"); ValueError for a name that is not `org/repo`."""
    parts = hf_repo.split(":")
    repo, tag = parts[0], parts[-1] if len(parts) > 1 else ""
    if len(repo.split("/")) != 2:
        raise ValueError(f"invalid HF repo format '{hf_repo}', expected <user>/<model>[:quant]")
    return repo, tag


def _is_model_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".gguf") and not any(s in name for s in ("imatrix", *_SIDECARS))


def resolve(hf_repo: str, hf_file: str = "") -> Path | None:
    """The cached file `-hf REPO[:TAG]` (and `-hff FILE`) would load, without the network
    (common_download_resolve_path): the tag's first shard, else Q4_K_M, Q8_0, the first model."""
    try:
        repo, tag = split_repo_tag(hf_repo)
    except ValueError:
        return None
    files = cached_files(repo)
    if hf_file:
        return next((f.local_path for f in files if f.path == hf_file), None)
    for wanted in [tag] if tag else ["Q4_K_M", "Q8_0"]:
        pattern = re.compile(re.escape(wanted) + "[.-]", re.IGNORECASE)
        for f in files:
            if _is_model_file(f.path) and pattern.search(f.path):
                _prefix, _tag, index, count = split_info(f.path)
                if count <= 1 or index == 1:
                    return f.local_path
    if not tag:
        for f in files:
            _prefix, _tag, index, count = split_info(f.path)
            if _is_model_file(f.path) and (count <= 1 or index == 1):
                return f.local_path
    return None


def remove(hf_repo: str) -> bool:
    """Delete a cached model's files (common_download_remove): the snapshot entries of its tag,
    then the blobs no other entry points to; a name without a tag removes the repository."""
    try:
        repo, tag = split_repo_tag(hf_repo)
    except ValueError:
        return False
    if not tag:
        import shutil

        target = cache_directory() / ("models--" + repo.replace("/", "--"))
        if not valid_repo_id(repo) or not target.is_dir():
            return False
        shutil.rmtree(target, ignore_errors=True)
        return True
    doomed = [f.local_path for f in cached_files(repo) if split_info(f.path)[1] == tag.upper()]
    if not doomed:
        return False
    # a snapshot entry links to its blob in the repository's blobs/ folder; a link that points
    # anywhere else (a hand-made cache linking to a model kept elsewhere) loses only the link
    repo_dir = os.path.normpath(cache_directory() / ("models--" + repo.replace("/", "--")))
    blobs = [b for b in (Path(os.path.normpath(p.parent / os.readlink(p))) for p in doomed if p.is_symlink())
             if str(b).startswith(repo_dir + os.sep)]
    for path in doomed:
        try:
            path.unlink()
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
    kept = {Path(os.path.normpath(f.local_path.parent / os.readlink(f.local_path)))
            for f in cached_files(repo) if f.local_path.is_symlink()}
    for blob in blobs:
        if blob not in kept:
            try:
                blob.unlink()
            except OSError as exc:
                log.warning("could not remove %s: %s", blob, exc)
    return True


def for_hf_flag(hf_repo: str, hf_file: str = "") -> tuple[str, Path]:
    """What `-hf REPO[:TAG]` (`-hff FILE`) starts, from the cache alone, as llama-server does
    offline (common_download_get_hf_plan): a repository holding a `preset.ini` is a router on
    that preset ("preset", path); otherwise the model file `resolve` picks ("model", path).
    ValueError says why nothing fits."""
    repo, _tag = split_repo_tag(hf_repo)
    files = cached_files(repo)
    preset = next((f.local_path for f in files if f.path == "preset.ini"), None)
    if preset is not None:
        return "preset", preset
    path = resolve(hf_repo, hf_file)
    if path is None:
        what = f"'{hf_file}' of '{repo}'" if hf_file else f"'{hf_repo}'"
        raise ValueError(f"{what} is not in llama-server's download cache ({cache_directory()}), and pyllama "
                         "never downloads models from a hub: fetch it with llama-server (or `hf download`), "
                         "or pass -m FILE")
    return "model", path
