"""Run the OpenAI-compatible app under uvicorn (``sftlab serve``).

The server binds 127.0.0.1 unless told otherwise, prints one line
``sftlab serve: ready at http://HOST:PORT/v1`` once it accepts connections (port 0
picks a free port; the line tells which), and shuts down cleanly on SIGTERM or
SIGINT: uvicorn stops accepting, lets in-flight requests finish (up to
``graceful_s`` seconds), then the batcher is stopped and waiting requests fail. A model
call still computing then is abandoned: the process exits rather than wait for it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from sftlab.errors import UserError
from sftlab.serve.schemas import ServeLimits

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    model: str
    adapter: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None  # served model name; default: the model folder's name
    template: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    batch_wait_ms: float = 5.0
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool = False
    graceful_s: int = 10
    limits: ServeLimits = ServeLimits()


def served_name(opts: ServeOptions) -> str:
    return opts.name or Path(opts.adapter or opts.model.rstrip("/")).name or opts.model


def serve(opts: ServeOptions) -> None:
    """Load the model and serve it until SIGTERM/SIGINT."""
    sock = _bind(opts.host, opts.port)  # before any heavy import: a busy port fails fast
    try:
        from sftlab.models.runtime import load_for_inference
        from sftlab.serve.app import create_app

        loaded = load_for_inference(opts.model, adapter=opts.adapter, dtype=opts.dtype,
                                    device=opts.device, trust_remote_code=opts.trust_remote_code)
        model, tokenizer = loaded.model, loaded.tokenizer
    except BaseException:
        sock.close()
        raise
    aliases = tuple(a for a in (opts.model, opts.adapter) if a)
    app = create_app(model, tokenizer, model_name=served_name(opts), aliases=aliases,
                     template=opts.template, max_batch=opts.max_batch,
                     max_queue=opts.max_queue, batch_wait_ms=opts.batch_wait_ms,
                     limits=opts.limits)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=opts.graceful_s,
                            lifespan="on", timeout_keep_alive=5)
    _ReadyServer(config).run(sockets=[sock])
    if app.state.batcher.busy():  # a model call nobody waits for: do not wait for it either
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}",
                        where="--port") from None
    return sock


class _ReadyServer(uvicorn.Server):
    """A uvicorn server that prints its URL once its socket accepts connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"sftlab serve: ready at http://{shown}:{port}/v1", flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Shut down gracefully; after SIGTERM exit with status 0 (uvicorn would re-raise
        the signal once shut down, making a clean stop look like a kill)."""
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        print("sftlab serve: stopped", flush=True)
