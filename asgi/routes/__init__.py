"""HTTP routes, one module per endpoint family; `register_routes` mounts them all."""

from __future__ import annotations

from quart import Quart

from asgi.settings import Settings


def register_routes(app: Quart, settings: Settings) -> None:
    from asgi.routes import (
        anthropic,
        chat,
        completions,
        cors_proxy,
        embeddings,
        lora,
        meta,
        rerank,
        responses,
        static,
        streams,
        tokens,
        unavailable,
        vertex,
    )
    from asgi.routes import models as model_list

    for module in (meta, model_list, tokens, completions, chat, embeddings, cors_proxy, anthropic, responses, rerank,
                   lora, streams, unavailable):
        app.register_blueprint(module.bp)
    vertex.register(app)  # only when AIP_MODE=PREDICTION (Vertex AI custom container)
    if settings.static_path is not None and settings.static_path.is_dir():
        # Registered last: its catch-all path must not shadow the API routes.
        models = [] if settings.api_keys else [m.path for m in settings.models]
        app.register_blueprint(static.make_blueprint(settings.static_path, models))
