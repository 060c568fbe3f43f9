"""Vendor the web page's third-party libraries from the npm registry into web/vendor/.

    python tools/web_vendor.py          # or: make web-vendor

The page renders model output with markdown-it (Markdown), DOMPurify (the sanitizer) and
KaTeX (math). They are fetched with `npm pack` at pinned versions (no CDN at run time, no
node_modules), and only the browser builds are kept, each with its licence beside it.
The result is committed (about 0.9 MB), so a fresh clone, CI and `pip install` need no
npm; rerunning this script reproduces it byte for byte from the registry tarballs
(downloads are cached in ~/.cache/pyllama/npm).

`npm_file()` is also what the browser tests use to get axe-core, which is never shipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO / "web" / "vendor"
CACHE = Path.home() / ".cache" / "pyllama" / "npm"

# package -> (version, {file in the tarball: path under web/vendor/})
PACKAGES: dict[str, tuple[str, dict[str, str]]] = {
    "markdown-it": ("15.0.3", {
        "package/dist/browser/markdown-it.esm.min.mjs": "markdown-it.esm.min.js",  # .js: every static host serves it as JavaScript
        "package/LICENSE": "markdown-it.LICENSE",
    }),
    "dompurify": ("3.5.0", {
        "package/dist/purify.es.mjs": "purify.es.js",
        "package/LICENSE": "dompurify.LICENSE",
    }),
    "katex": ("0.19.1", {
        "package/dist/katex.min.js": "katex/katex.min.js",
        "package/dist/katex.min.css": "katex/katex.min.css",
        "package/LICENSE": "katex/LICENSE",
    }),
}  # fmt: skip
KATEX_FONTS = "package/dist/fonts/"  # only the .woff2 files: every browser that runs Pyodide reads them


def tarball(name: str, version: str) -> Path:
    """The registry tarball of name@version, from the cache or `npm pack`."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tgz = CACHE / f"{name}-{version}.tgz"
    if not tgz.exists():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("web_vendor: npm is not installed (apt-get install npm)")
        res = subprocess.run([npm, "pack", f"{name}@{version}", "--silent"], cwd=CACHE, capture_output=True, text=True)
        if res.returncode != 0 or not tgz.exists():
            sys.exit(f"web_vendor: npm pack {name}@{version} failed:\n{res.stderr[-2000:]}")
    return tgz


def npm_file(name: str, version: str, member: str) -> Path:
    """One file of an npm package (e.g. axe-core's axe.min.js for the tests), cached."""
    out = CACHE / f"{name}-{version}" / member
    if not out.exists():
        with tarfile.open(tarball(name, version)) as tf:
            data = tf.extractfile(f"package/{member}")
            assert data is not None
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data.read())
    return out


def vendor(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    versions = {}
    for name, (version, files) in PACKAGES.items():
        with tarfile.open(tarball(name, version)) as tf:
            for member, dest in files.items():
                data = tf.extractfile(member)
                assert data is not None, member
                target = out / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data.read())
            if name == "katex":
                for info in tf.getmembers():
                    if info.name.startswith(KATEX_FONTS) and info.name.endswith(".woff2"):
                        data = tf.extractfile(info)
                        assert data is not None
                        target = out / "katex" / "fonts" / Path(info.name).name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(data.read())
        versions[name] = version
    (out / "VERSIONS.json").write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[web_vendor] wrote {out} ({', '.join(f'{k} {v}' for k, v in versions.items())}; {size / 1024:.0f} KiB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=VENDOR)
    vendor(ap.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
