"""Static files at `/`: the repository's web UI, or the folder given with `--path`.

Two extras, whatever `--path` says: `/completion.js` falls back to the bundled one (the
README's "run with --path ./your-directory and import /completion.js"), and `/wasm/` serves
wasm/dist (built by `make wasm`) so the in-browser engine can fetch the pyllama wheel while
Pyodide itself comes from the CDN, or the whole offline Pyodide with `?pyodide=/wasm/`.
`/gguf/` lists the server's own model files (JSON) and `/gguf/<name>` serves them, so the
page's in-browser engine can load the same model with one click (not when API keys are set).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from quart import Blueprint, Response, jsonify, send_from_directory

from asgi.errors import NotFound

REPO = Path(__file__).resolve().parents[2]
BUNDLED_WEB = REPO / "web"
WASM_DIST = REPO / "wasm" / "dist"


async def _send(root: Path, filename: str) -> Response:
    response = await send_from_directory(root, filename)
    if filename.endswith((".js", ".mjs")):
        response.mimetype = "text/javascript"
    elif filename.endswith(".wasm"):
        response.mimetype = "application/wasm"
    response.cache_control.no_cache = True
    return response


def _locate(root: Path, filename: str) -> Path | None:
    """The file `filename` names under `root`, or None: outside the folder, missing, or a
    name the OS refuses (a NUL, a component over 255 bytes, a loop of symlinks) is a 404,
    never a 500 that would show where the server is installed."""
    if "\x00" in filename or len(filename.encode("utf-8", "surrogatepass")) > 4096:
        return None
    try:
        target = (root / filename).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            return None
    except (OSError, ValueError, RuntimeError):  # ENAMETOOLONG, ELOOP, bad surrogates
        return None
    return target


def make_blueprint(folder: Path, models: list[Path] | None = None) -> Blueprint:
    bp = Blueprint("static", __name__)
    root = folder.resolve()
    ggufs = {p.name: p.resolve() for p in models or [] if p.suffix == ".gguf" and p.is_file()}

    @bp.get("/gguf/")
    async def gguf_index() -> Response:
        # url: relative to /gguf/ itself, so the list works behind a proxy's path prefix too
        items = [{"name": n, "url": quote(n), "size": p.stat().st_size} for n, p in ggufs.items()]
        return jsonify({"models": items})

    @bp.get("/gguf/<path:filename>")
    async def gguf_file(filename: str) -> Response:
        path = ggufs.get(filename)
        if path is None:
            raise NotFound("File Not Found")
        response = await send_from_directory(path.parent, path.name)
        response.mimetype = "application/octet-stream"
        return response

    @bp.get("/wasm/<path:filename>")
    async def wasm_files(filename: str) -> Response:
        dist = WASM_DIST.resolve()
        target = _locate(dist, filename)
        if target is None:
            if not dist.is_dir():
                raise NotFound("File Not Found (in-browser files missing: run `make wasm`)")
            raise NotFound("File Not Found")
        return await _send(dist, str(target.relative_to(dist)))

    @bp.get("/", defaults={"filename": "index.html"})
    @bp.get("/<path:filename>")
    async def files(filename: str) -> Response:
        target = _locate(root, filename)
        if target is None:
            if filename == "completion.js" and (BUNDLED_WEB / filename).is_file():
                return await _send(BUNDLED_WEB.resolve(), filename)
            raise NotFound("File Not Found")
        return await _send(root, str(target.relative_to(root)))

    return bp
