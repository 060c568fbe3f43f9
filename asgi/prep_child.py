"""The preparation process's side: large request bodies parsed, templated and tokenized
away from the server's GIL (asgi.prep_process starts it and talks to it).

A thread that runs pure Python (json.loads of 60 MB, a chat template over a long message,
the pre-tokenizer and BPE, json.dumps of 840 K token pieces) shares the GIL with the
model thread and slows every other client's generation down to a fraction of its speed.
This process has its own interpreter and runs on another core; it needs only each
model's vocabulary and chat template, read from the GGUF's metadata (the weights stay
unread on disk), and it runs the very functions the server runs in-process
(asgi/prep_jobs.py), so both paths give the same answers.

Protocol, one job at a time over a duplex pipe: the server sends a pickled `Job` and then
the raw body; the process answers with a pickled `Reply` (asgi/prep_protocol.py). A `None` job means "exit".
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
from multiprocessing.connection import Connection

from asgi.prep_jobs import Vocabularies, run_job
from asgi.prep_protocol import ChildConfig, Reply, failure


def serve(conn: Connection, config: ChildConfig) -> None:
    """The process's main loop (multiprocessing target): one job after another until told
    to stop or until the server's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops this process
    # A lower CPU priority than the model thread's: on a busy machine a large body's
    # preparation takes the cores the generation leaves, not the generation's. (Unlike a
    # worker thread, this process holds no lock the server waits for, so it is safe.)
    with contextlib.suppress(OSError):
        os.nice(config.nice)
    logging.basicConfig(level=logging.WARNING, format="prep: %(levelname)s %(message)s")
    vocabs = Vocabularies()
    while True:
        try:
            job = pickle.loads(conn.recv_bytes())
            if job is None:
                return
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply = run_job(job, raw, vocabs, config)
        except RecursionError:
            reply = Reply(error=(400, "invalid_request_error", "the request is nested too deeply to prepare", {}))
        except Exception as exc:
            reply = Reply(error=failure(exc))
        del raw
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            return
