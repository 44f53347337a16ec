"""The FastAPI app of ``sftlab serve``: OpenAI-compatible completions and chat.

``create_app(model, tokenizer, ...)`` builds the app around an already loaded model,
so tests can run it in-process; :mod:`sftlab.serve.server` loads a model and runs
the app under uvicorn.

Endpoints: ``GET /v1/models``, ``GET /health``, ``POST /v1/completions`` (prompt as a
string, a list of strings, token ids or lists of token ids; ``logprobs`` + ``echo``
give prompt log-probabilities, as loglikelihood scoring needs) and
``POST /v1/chat/completions``. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 for invalid requests, 404
for an unknown model name, 408 for a body that does not arrive in time, 413 for a body
over ``limits.max_body_bytes``, 503 (with ``Retry-After``) when the queue is full, 500
(JSON too) when the model failed on the request.

Limits (:class:`~sftlab.serve.schemas.ServeLimits`) bound each request: body size, rows
(prompts x ``n``) and tokens (prompt + ``max_tokens`` over its rows). Parsing, validation,
tokenising and decoding run in worker threads, never on the event loop, so ``/health``
and small requests are answered while a large one is read. A request whose client has
disconnected is dropped from the batcher before its next row is computed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from sftlab.errors import UserError
from sftlab.serve.batcher import Batcher, QueueFull
from sftlab.serve.conversation import render_chat
from sftlab.serve.engine import Engine, Row, RowOutput, TokenScores
from sftlab.serve.schemas import ChatRequest, CompletionRequest, ServeLimits

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.2

DEFAULT_CHAT_MAX_TOKENS = 512


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.headers = headers or {}


def _error(status: int, message: str, kind: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(model: Any, tokenizer: Any, *, model_name: str = "model",
               aliases: tuple[str, ...] = (), template: str | None = None,
               max_batch: int = 8, max_queue: int = 64, batch_wait_ms: float = 5.0,
               limits: ServeLimits | None = None) -> FastAPI:
    """An OpenAI-compatible app serving ``model`` under ``model_name`` (and ``aliases``)."""
    limits = limits or ServeLimits()
    engine = Engine(model, tokenizer, max_batch=max_batch)
    batcher = Batcher(engine.run, max_batch=max_batch, max_queue=max_queue,
                      wait_s=batch_wait_ms / 1000)
    workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sftlab-parse")
    names = {model_name, *aliases}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="sftlab serve", lifespan=lifespan)
    app.state.engine, app.state.batcher, app.state.limits = engine, batcher, limits

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(workers, fn, *args)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc.errors(), skip=1), "invalid_request_error")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return _error(500, f"the model failed on this request ({type(exc).__name__}: {exc})"[:500],
                      "server_error")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queued": batcher.pending(), "running": len(batcher.running),
                "batches_run": batcher.batches_run, "rows_run": batcher.rows_run}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "sftlab"}]}

    def completion_rows(body: bytes) -> tuple[CompletionRequest, list, list[Row]]:
        req = _parse(CompletionRequest, body)
        _check_model(req.model, names)
        _check_rows(_n_prompts(req.prompt) * req.n, limits)
        prompts = _prompt_ids(engine, req.prompt)
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        rows = _rows(engine, prompts, req, max_tokens, logprobs=req.logprobs, echo=req.echo)
        _check_tokens(rows, limits)
        return req, prompts, rows

    def completion_answer(req: CompletionRequest, prompts: list, outputs: list) -> dict:
        choices = [_completion_choice(engine, k, prompts[k // req.n], out, req)
                   for k, out in enumerate(outputs)]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model_name, "choices": choices,
                "usage": _usage([ids for ids, _ in prompts], outputs)}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict:
        req, prompts, rows = await off_loop(completion_rows, await _body(request, limits))
        outputs = await _submit(batcher, rows, request)
        return await off_loop(completion_answer, req, prompts, outputs)

    def chat_rows(body: bytes) -> tuple[list[int], list[Row]]:
        req = _parse(ChatRequest, body)
        _check_model(req.model, names)
        _check_rows(req.n, limits)
        try:
            text, special = render_chat(tokenizer, [m.model_dump() for m in req.messages], template)
        except UserError as err:
            raise ApiError(400, str(err), param="messages") from None
        ids = engine.encode(text, add_special_tokens=special)
        remaining = engine.max_length - len(ids)
        max_tokens = req.max_tokens if req.max_tokens is not None else min(
            DEFAULT_CHAT_MAX_TOKENS, max(remaining, 0))
        top = (req.top_logprobs or 0) if req.logprobs else None
        rows = _rows(engine, [(ids, text)], req, max_tokens, logprobs=top, echo=False)
        _check_tokens(rows, limits)
        return ids, rows

    def chat_answer(ids: list[int], outputs: list) -> dict:
        choices = [_chat_choice(engine, k, out) for k, out in enumerate(outputs)]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": model_name, "choices": choices,
                "usage": _usage([ids], outputs)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        ids, rows = await off_loop(chat_rows, await _body(request, limits))
        outputs = await _submit(batcher, rows, request)
        return await off_loop(chat_answer, ids, outputs)

    return app


async def _body(request: Request, limits: ServeLimits) -> bytes:
    """The request body, refused (413) past ``max_body_bytes`` before it is all read, and
    (408) when it is still arriving after ``body_timeout_s``."""
    cap = limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"request body of {int(declared):,} bytes is over the limit of "
                       f"{cap:,} (--max-body-bytes)", "request_too_large")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise ApiError(413, f"request body is over the limit of {cap:,} bytes "
                                   "(--max-body-bytes)", "request_too_large")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"request body not received within {limits.body_timeout_s:g}s",
                       "request_timeout") from None
    return b"".join(chunks)


def _parse(schema: type[BaseModel], body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, f"request body is not valid JSON ({err})") from None
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        where = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else None
        raise ApiError(400, _validation_message(errors), param=where or None) from None


def _validation_message(errors: list[dict], skip: int = 0) -> str:
    if errors and errors[0].get("type") == "json_invalid":
        return (f"request body is not valid JSON ({errors[0].get('msg')} at character "
                f"{errors[0].get('loc', ('', '?'))[-1]})")
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'][skip:])}: {e['msg']}"
                     for e in errors) or "invalid request"


def _n_prompts(prompt: Any) -> int:
    if isinstance(prompt, str) or all(isinstance(p, int) for p in prompt):
        return 1
    return len(prompt)


def _check_rows(rows: int, limits: ServeLimits) -> None:
    if rows > limits.max_rows:
        raise ApiError(400, f"{rows} rows (prompts x n) in one request; the limit is "
                       f"{limits.max_rows} (--max-rows): split the request", param="prompt")


def _check_tokens(rows: list[Row], limits: ServeLimits) -> None:
    tokens = sum(len(r.prompt_ids) + r.max_tokens for r in rows)
    if tokens > limits.max_request_tokens:
        raise ApiError(400, f"{tokens:,} tokens (prompt + max_tokens over all rows) in one "
                       f"request; the limit is {limits.max_request_tokens:,} "
                       "(--max-request-tokens): split the request", param="prompt")


def _check_model(requested: str | None, names: set[str]) -> None:
    if requested is not None and requested not in names:
        raise ApiError(404, f"model {requested!r} is not served here (served: "
                       f"{', '.join(sorted(names))})", "model_not_found", "model")


async def _submit(batcher: Batcher, rows: list[Row], request: Request) -> list[RowOutput]:
    """The rows' outputs; the work is dropped if the client disconnects meanwhile."""
    job = asyncio.ensure_future(batcher.submit(rows))
    try:
        while not job.done():
            await asyncio.wait({job}, timeout=DISCONNECT_POLL_S)
            if not job.done() and await request.is_disconnected():
                job.cancel()
                raise ApiError(499, "client closed the request", "client_closed_request")
        return job.result()
    except QueueFull:
        raise ApiError(503, "server busy: request queue is full, retry later",
                       "server_overloaded", headers={"Retry-After": "1"}) from None
    except ApiError:
        raise
    except Exception as err:  # the model failed on this request's rows (and only on them)
        raise ApiError(500, f"the model failed on this request ({type(err).__name__}: "
                       f"{err})"[:500], "server_error") from None
    finally:
        if not job.done():
            job.cancel()


def _prompt_ids(engine: Engine, prompt: Any) -> list[tuple[list[int], str | None]]:
    """Each prompt as (token ids, text or None when given as ids)."""
    if isinstance(prompt, str):
        return [(engine.encode(prompt), prompt)]
    if all(isinstance(p, int) for p in prompt):
        return [(list(prompt), None)]
    if all(isinstance(p, str) for p in prompt):
        return [(engine.encode(p), p) for p in prompt]
    return [(list(p), None) for p in prompt]


def _rows(engine: Engine, prompts: list[tuple[list[int], str | None]], req: Any, max_tokens: int,
          *, logprobs: int | None, echo: bool) -> list[Row]:
    vocab = len(engine.tokenizer)
    rows = []
    for k, (ids, _) in enumerate(prompts):
        if any(t < 0 or t >= vocab for t in ids):
            raise ApiError(400, f"prompt[{k}]: token id out of range [0, {vocab})", param="prompt")
        if not ids and (max_tokens > 0 or echo):
            raise ApiError(400, f"prompt[{k}]: empty prompt (no tokens)", param="prompt")
        if len(ids) + max_tokens > engine.max_length:
            raise ApiError(400, f"prompt[{k}]: {len(ids)} prompt tokens + max_tokens "
                           f"{max_tokens} exceed the model's context of {engine.max_length}",
                           param="max_tokens")
        if max_tokens == 0 and not (echo and logprobs is not None):
            raise ApiError(400, "max_tokens=0 is only allowed with echo=true and logprobs",
                           param="max_tokens")
        for j in range(req.n):
            rows.append(Row(prompt_ids=ids, max_tokens=max_tokens, temperature=req.temperature,
                            top_p=req.top_p, stop=tuple(req.stop or ()),
                            seed=None if req.seed is None else req.seed + j,
                            logprobs=logprobs, echo=echo))
    return rows


def _usage(prompt_ids: list[list[int]], outputs: list[RowOutput]) -> dict:
    prompt = sum(len(ids) for ids in prompt_ids)
    completion = sum(len(out.completion_ids) for out in outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text each token adds, decoded incrementally (pieces concatenate to the text)."""
    pieces = []
    for k in range(len(ids)):
        start = max(0, k - 6)
        before = tokenizer.decode(ids[start:k], skip_special_tokens=False)
        after = tokenizer.decode(ids[start:k + 1], skip_special_tokens=False)
        pieces.append(after[len(before):] if after.startswith(before) else after)
    return pieces


def _legacy_logprobs(engine: Engine, prompt: TokenScores | None, completion: TokenScores | None,
                     prompt_text: str) -> dict:
    """OpenAI's legacy ``logprobs`` object; ``text_offset`` indexes into the choice text
    (the prompt text first when it is echoed)."""
    tokenizer = engine.tokenizer
    tokens, offsets, logprobs, tops = [], [], [], []
    pos = 0
    for part, is_prompt in ((prompt, True), (completion, False)):
        if part is None:
            continue
        pieces = token_pieces(tokenizer, part.ids)
        starts = _prompt_offsets(tokenizer, prompt_text, len(part.ids)) if is_prompt else []
        for k, piece in enumerate(pieces):
            offsets.append(starts[k] if starts else pos)
            pos += len(piece)
        if is_prompt:
            pos = len(prompt_text)
        tokens += pieces
        logprobs += part.logprobs
        tops += [None if top is None else {_piece(tokenizer, t): v for t, v in top.items()}
                 for top in part.top]
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops,
            "text_offset": offsets}


def _piece(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _prompt_offsets(tokenizer: Any, prompt_text: str, n_prompt: int) -> list[int]:
    """Character offsets of the prompt tokens in the prompt text, when the tokenizer
    gives them for exactly these tokens; empty otherwise (pieces are summed instead)."""
    if not tokenizer.is_fast:
        return []
    enc = tokenizer(prompt_text, return_offsets_mapping=True)
    if len(enc["input_ids"]) != n_prompt:
        return []
    return [start for start, _ in enc["offset_mapping"]]


def _completion_choice(engine: Engine, index: int, prompt: tuple[list[int], str | None],
                       out: RowOutput, req: CompletionRequest) -> dict:
    ids, text = prompt
    prompt_text = text if text is not None else engine.tokenizer.decode(ids)
    logprobs = None
    if req.logprobs is not None:
        logprobs = _legacy_logprobs(engine, out.prompt_scores if req.echo else None,
                                    out.completion_scores, prompt_text)
    return {"index": index, "text": (prompt_text if req.echo else "") + out.text,
            "logprobs": logprobs, "finish_reason": out.finish_reason}


def _chat_choice(engine: Engine, index: int, out: RowOutput) -> dict:
    logprobs = None
    if out.completion_scores is not None:
        scores = out.completion_scores
        pieces = token_pieces(engine.tokenizer, scores.ids)
        logprobs = {"content": [
            {"token": piece, "logprob": lp, "bytes": list(piece.encode()),
             "top_logprobs": [{"token": _piece(engine.tokenizer, t), "logprob": v,
                               "bytes": list(_piece(engine.tokenizer, t).encode())}
                              for t, v in (top or {}).items()]}
            for piece, lp, top in zip(pieces, scores.logprobs, scores.top, strict=True)]}
    return {"index": index, "message": {"role": "assistant", "content": out.text},
            "logprobs": logprobs, "finish_reason": out.finish_reason}
