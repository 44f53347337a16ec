"""A scripted OpenAI-compatible chat server on loopback (FastAPI + uvicorn in a thread).

``ScriptedServer(responder)`` answers ``POST /v1/chat/completions`` with what
``responder(body, attempt)`` returns: a string (the message content), or a
:class:`Reply` (status, content, headers) for faults. ``attempt`` counts the requests
with the same body so far (1 for the first). ``GET /v1/models`` answers 200. Every
request body is recorded in ``bodies``; ``latency`` seconds are awaited per request
(asynchronously, so concurrent requests overlap as on a real server).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse


@dataclass
class Reply:
    status: int = 200
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None  # a body that is not an OpenAI chat completion


def body_key(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


class ScriptedServer:
    def __init__(self, responder: Callable[[dict, int], str | Reply], latency: float = 0.0,
                 port: int = 0):
        self.responder = responder
        self.latency = latency
        self.bodies: list[dict] = []
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"data": [{"id": "scripted"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            key = body_key(body)
            with self.lock:
                self.bodies.append(body)
                self.attempts[key] += 1
                attempt = self.attempts[key]
            if self.latency:
                await asyncio.sleep(self.latency)
            reply = self.responder(body, attempt)
            if isinstance(reply, str):
                reply = Reply(content=reply)
            if reply.raw is not None:
                return PlainTextResponse(reply.raw, status_code=reply.status,
                                         headers=reply.headers)
            payload = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": reply.content}}]}
            if reply.status >= 400:
                payload = {"error": {"message": reply.content or "scripted fault"}}
            return JSONResponse(payload, status_code=reply.status, headers=reply.headers)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(app, log_level="error", access_log=False, backlog=2048,
                                limit_concurrency=4096)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted server did not start")
            time.sleep(0.02)

    def asked(self) -> int:
        with self.lock:
            return len(self.bodies)

    def reset(self) -> None:
        with self.lock:
            self.bodies.clear()
            self.attempts.clear()

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
