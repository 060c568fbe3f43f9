"""Static files at `/`: the repository's web UI, or the folder given with `--path`."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

from asgi.errors import NotFound


def make_blueprint(folder: Path) -> Blueprint:
    bp = Blueprint("static", __name__)
    root = folder.resolve()

    @bp.get("/", defaults={"filename": "index.html"})
    @bp.get("/<path:filename>")
    async def files(filename: str) -> Response:
        target = (root / filename).resolve()
        if target.is_dir():
            target = target / "index.html"
            filename = str(target.relative_to(root))
        if not target.is_relative_to(root) or not target.is_file():
            raise NotFound("File Not Found")
        response = await send_from_directory(root, filename)
        if filename.endswith(".js") or filename.endswith(".mjs"):
            response.mimetype = "text/javascript"
        response.cache_control.no_cache = True
        return response

    return bp
