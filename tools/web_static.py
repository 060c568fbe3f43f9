"""Write a folder that runs the in-browser engine from any static file host.

    python tools/web_static.py [--out build/web-static] [--model PATH.gguf]   # or: make web-static

The folder holds the web page (web/, with its vendored libraries), the offline Pyodide and
the wheels (wasm/dist, assembled by wasm/build.py from the registries) under wasm/, and a
README.md on publishing it. No pyllama server is involved: the page starts in in-browser
mode with Pyodide from ./wasm/ (a <meta name="pyllama-defaults"> tag in index.html says
so). `--model` copies a GGUF into models/ and makes it the default model URL; without it
the visitor picks a file or enters a URL. Models loaded once are kept in the browser.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"
WASM_DIST = REPO / "wasm" / "dist"

README = """# pyllama, in-browser edition (static build)

This folder is a complete web page that runs a GGUF language model inside the browser
(pyllama's engine under Pyodide, in a Web Worker). It needs no server of its own: any
static file host works.

## Try it locally

    python3 -m http.server 8000 --directory .
    # open http://127.0.0.1:8000/

## Publish it

Copy the whole folder as it is to any static host: GitHub Pages (push it to a `gh-pages`
branch or a `docs/` folder), Netlify or Cloudflare Pages (drag and drop the folder, no
build command), an S3/R2 bucket with website hosting, or any web server's document root.
Keep the layout: index.html, vendor/, wasm/ and models/ side by side. The page must be
served over https (or from localhost) so the browser can keep models in its cache. `.wasm`
files should be served as `application/wasm` (most hosts do; Python's http.server does).

## Models

{model_note}Anyone can also pick a local .gguf file or enter a model URL (the host of that
URL must allow CORS). A model loaded once is kept in the browser (Cache Storage): the next
visit loads it with no download, and the panel lists kept models with their size and a
delete button.

Built from pyllama {commit} by `make web-static`.
"""


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "(unknown commit)"


def build(out: Path, model: Path | None) -> None:
    if not (WASM_DIST / "pyodide.asm.wasm").exists() or not (WASM_DIST / "wheels.json").exists():
        res = subprocess.run([sys.executable, str(REPO / "wasm" / "build.py"), "--out", str(WASM_DIST)])
        if res.returncode != 0:
            sys.exit("web_static: wasm/build.py failed (it needs npm and pip to reach their registries)")
    if not (WEB / "vendor" / "VERSIONS.json").exists():
        subprocess.run([sys.executable, str(REPO / "tools" / "web_vendor.py")], check=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(WEB, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(WASM_DIST, out / "wasm")
    defaults: dict[str, str] = {"engine": "browser", "pyodide": "wasm/"}
    note = ""
    if model is not None:
        (out / "models").mkdir()
        shutil.copyfile(model, out / "models" / model.name)
        defaults["model"] = f"models/{model.name}"
        note = f"`models/{model.name}` is the default model: press *Load* once.\n"
    index = (out / "index.html").read_text()
    meta = f'<meta name="pyllama-defaults" content="{html.escape(json.dumps(defaults))}">'
    index = index.replace('<meta charset="utf-8">', '<meta charset="utf-8">\n' + meta, 1)
    (out / "index.html").write_text(index)
    (out / "README.md").write_text(README.format(model_note=note, commit=git_commit()))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[web_static] wrote {out} ({size / 2**20:.1f} MiB); try: python3 -m http.server --directory {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "build" / "web-static")
    ap.add_argument("--model", type=Path, default=None, help="a GGUF to ship in models/ as the default")
    a = ap.parse_args()
    if a.model is not None and not a.model.is_file():
        sys.exit(f"web_static: --model {a.model}: no such file")
    build(a.out, a.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
