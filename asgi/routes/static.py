"""Static files at `/`: the repository's web UI, or the folder given with `--path`.

Two extras, whatever `--path` says: `/completion.js` falls back to the bundled one (the
README's "run with --path ./your-directory and import /completion.js"), and `/wasm/` serves
wasm/dist (built by `make wasm`) so the in-browser engine can fetch the pyllama wheel while
Pyodide itself comes from the CDN, or the whole offline Pyodide with `?pyodide=/wasm/`.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

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


def make_blueprint(folder: Path) -> Blueprint:
    bp = Blueprint("static", __name__)
    root = folder.resolve()

    @bp.get("/wasm/<path:filename>")
    async def wasm_files(filename: str) -> Response:
        if "\x00" in filename:
            raise NotFound("File Not Found")  # no file name holds a NUL (os.path raises on it)
        dist = WASM_DIST.resolve()
        target = (dist / filename).resolve()
        if not target.is_relative_to(dist) or not target.is_file():
            if not dist.is_dir():
                raise NotFound("File Not Found (in-browser files missing: run `make wasm`)")
            raise NotFound("File Not Found")
        return await _send(dist, filename)

    @bp.get("/", defaults={"filename": "index.html"})
    @bp.get("/<path:filename>")
    async def files(filename: str) -> Response:
        if "\x00" in filename:
            raise NotFound("File Not Found")  # no file name holds a NUL (os.path raises on it)
        target = (root / filename).resolve()
        if target.is_dir():
            target = target / "index.html"
            filename = str(target.relative_to(root))
        if not target.is_relative_to(root) or not target.is_file():
            if filename == "completion.js" and (BUNDLED_WEB / filename).is_file():
                return await _send(BUNDLED_WEB.resolve(), filename)
            raise NotFound("File Not Found")
        return await _send(root, filename)

    return bp
