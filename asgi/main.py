"""`pyllama-server`: parse llama-server's flags and serve the app with Hypercorn.

Hypercorn is driven through its Python API (not its CLI) so the flags stay
llama-server's: --host/--port become the bind address, --ssl-cert-file/--ssl-key-file
Hypercorn's certfile/keyfile, --timeout its read timeout (idle keep-alive connections close
after min(--timeout, 75) s). SIGINT/SIGTERM stop the server gracefully: the listening socket
closes, new requests on open connections get 503, in-flight generations get
--shutdown-timeout seconds to finish and are then cancelled with a well-formed ending, the
model threads finish their current step (a slot save in progress completes) and the process
exits 0. A flag argparse cannot read prints one line and exits with status 2; any other
start-up mistake (a bad value, file or config entry) prints one line and exits with status 1,
as llama-server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from asgi.flags import ignored_note
from asgi.logs import configure_logging
from asgi.settings import Settings, SettingsError, parse_settings


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6 literal


def hypercorn_config(settings: Settings) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{_bracketed(h)}:{settings.port}" for h in settings.hosts]
    if settings.ssl_cert_file is not None and settings.ssl_key_file is not None:
        config.certfile = str(settings.ssl_cert_file)
        config.keyfile = str(settings.ssl_key_file)
    # --timeout: a connection with no complete request head (idle keep-alive, or headers
    # trickling in) closes after min(--timeout, 75) s; a request body that stalls gets 408
    # after --timeout (Quart's BODY_TIMEOUT). Hypercorn's read_timeout stays off: it would
    # also cut a client that is quietly waiting for a long non-streamed generation.
    config.read_timeout = None
    config.keep_alive_timeout = min(settings.timeout, 75)
    # Hypercorn cancels what is still running after this: our own drain ends first.
    config.graceful_timeout = settings.shutdown_timeout + 5
    config.include_server_header = False
    config.accesslog = logging.getLogger("asgi.access") if settings.verbose else None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(settings: Settings) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve

    from asgi.app import create_app

    app = create_app(settings)
    state = app.extensions["pyllama"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log = logging.getLogger("asgi")
    drains: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            return
        log.info("%s: stopping (in-flight requests get up to %g s)", sig.name, settings.shutdown_timeout)
        drains.append(asyncio.ensure_future(state.drain(settings.shutdown_timeout)))
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    scheme = "https" if settings.ssl_cert_file else "http"
    logging.getLogger("asgi").info(
        "pyllama-server listening on %s://%s:%d (models: %s)",
        scheme, settings.host, settings.port, ", ".join(m.name for m in settings.models),
    )
    await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait)
    for task in drains:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(args, os.environ)
    except SettingsError as exc:
        print(f"pyllama-server: error: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings)
    log = logging.getLogger("asgi")
    for name in settings.ignored_flags:
        log.warning("%s", ignored_note(name))
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # e.g. the port is taken
        print(f"pyllama-server: error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
