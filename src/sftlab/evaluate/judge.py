"""A judge model behind an OpenAI-compatible chat API, with a judgment cache.

:class:`JudgeClient` sends chat-completion requests from a bounded pool of threads
through :class:`sftlab.httpclient.JSONClient` (the one HTTP client and retry policy:
429 / 5xx / 408 / timeouts / connection errors / malformed answers are retried with
exponential backoff and full jitter, honouring ``Retry-After``; each attempt has a total
deadline of ``timeout`` seconds and an answer-size cap of ``max_response_bytes``) and
gives up after ``max_retries`` retries with a :class:`Judgment` whose ``text`` is None
(the caller counts it as missing; it is never cached, so a re-run asks again).

Every answer is cached in :class:`JudgmentCache` (SQLite, WAL) keyed by the judge
model and the SHA-256 of the full request (messages + sampling parameters): a re-run
asks nothing twice. The API key is read from the environment variable named by
``api_key_env`` at construction and kept only in the request headers; it is never
logged, cached, or included in provenance (only the variable's *name* is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import UserError
from sftlab.httpclient import DEFAULT_MAX_RESPONSE_BYTES, JSONClient, RequestFailed, Retryable

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class Judgment:
    """The judge's answer to one request; ``text`` is None when it could not be had."""

    text: str | None
    cached: bool = False
    error: str | None = None
    attempts: int = 0


def request_key(messages: Messages, params: dict[str, Any]) -> str:
    """SHA-256 (hex) of the full request: messages and sampling parameters."""
    blob = json.dumps({"messages": messages, "params": params}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgmentCache:
    """SQLite table ``judgments(judge_model, prompt_hash, request, response, created)``.

    Safe to share between threads (one connection per thread, kept) and between
    processes (WAL; writes are single statements). ``synchronous=NORMAL``: a committed
    answer survives the process being killed (not necessarily a power cut), and a write
    costs no fsync.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS judgments (judge_model TEXT NOT NULL, "
                        "prompt_hash TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL,"
                        " created REAL NOT NULL, PRIMARY KEY (judge_model, prompt_hash))")

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = sqlite3.connect(self.path, timeout=30)
            con.execute("PRAGMA synchronous=NORMAL")
        return con

    def get(self, judge_model: str, key: str) -> str | None:
        with self._connect() as con:
            row = con.execute("SELECT response FROM judgments WHERE judge_model=? AND "
                              "prompt_hash=?", (judge_model, key)).fetchone()
        return row[0] if row else None

    def put(self, judge_model: str, key: str, request: dict[str, Any], response: str) -> None:
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?)",
                        (judge_model, key, json.dumps(request, ensure_ascii=False), response,
                         time.time()))

    def __len__(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]


def default_cache_path() -> Path:
    """Where judgments go when no study store folder is given."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sftlab" / "judgments.sqlite"


class JudgeClient:
    """Chat-completion calls to a judge model, bounded, retried and cached."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None,
                 concurrency: int = 4, max_retries: int = 5, timeout: float = 60.0,
                 cache: JudgmentCache | None = None, temperature: float = 0.0,
                 max_tokens: int = 2048, backoff_base: float = 1.0, backoff_max: float = 60.0,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.cache = cache if cache is not None else JudgmentCache(default_cache_path())
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0}
        self._stats_lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise UserError(f"judge: environment variable {api_key_env} (the API key) "
                                "is not set", where="judge.api_key_env")
            headers["Authorization"] = f"Bearer {key}"
        self._http = JSONClient(self.base_url, headers=headers, timeout=timeout,
                                max_retries=max_retries, backoff_base=backoff_base,
                                backoff_max=backoff_max, max_connections=concurrency,
                                max_response_bytes=max_response_bytes, name=f"judge {model}")

    def __repr__(self) -> str:
        return f"JudgeClient(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def provenance(self) -> dict[str, Any]:
        """What to record with scores (never the key itself)."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
                **self.params}

    def judge(self, messages: Messages) -> Judgment:
        return self.judge_many([messages])[0]

    def judge_many(self, conversations: list[Messages],
                   extra: list[dict[str, Any]] | None = None) -> list[Judgment]:
        """One judgment per conversation (same order); cached ones are not asked again,
        duplicates are asked once.

        ``extra`` (one dict per conversation) adds request fields to the sampling
        parameters of that request only (``seed``, ``response_format``); they are part
        of its body and of its cache key."""
        params = [{**self.params, **e} for e in extra] if extra else \
            [self.params] * len(conversations)
        keys = [request_key(m, p) for m, p in zip(conversations, params, strict=True)]
        results: dict[str, Judgment] = {}
        todo: dict[str, tuple[Messages, dict[str, Any]]] = {}
        for key, messages, p in zip(keys, conversations, params, strict=True):
            if key in results or key in todo:
                continue
            cached = self.cache.get(self.model, key)
            if cached is not None:
                results[key] = Judgment(cached, cached=True)
                self._count("cache_hits")
            else:
                todo[key] = (messages, p)
        if todo:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                fresh = pool.map(self._ask_and_store, todo.keys(),
                                 [m for m, _ in todo.values()], [p for _, p in todo.values()])
                results.update(zip(todo.keys(), fresh, strict=True))
        return [results[key] for key in keys]

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += amount

    def _ask_and_store(self, key: str, messages: Messages,
                       params: dict[str, Any] | None = None) -> Judgment:
        params = self.params if params is None else params
        judgment = self._ask(messages, params)
        if judgment.text is not None:
            self.cache.put(self.model, key, {"messages": messages, "params": params},
                           judgment.text)
        else:
            self._count("failures")
        return judgment

    def _ask(self, messages: Messages, params: dict[str, Any] | None = None) -> Judgment:
        body = {"model": self.model, "messages": messages,
                **(self.params if params is None else params)}
        try:
            text, attempts = self._http.post("chat/completions", body, parse=self._content)
        except RequestFailed as err:
            self._count("requests", err.attempts)
            self._count("retries", err.attempts - 1)
            if err.status is not None:
                log.error("judge %s: %s (not retried)", self.model, err)
            return Judgment(None, error=str(err), attempts=err.attempts)
        self._count("requests", attempts)
        self._count("retries", attempts - 1)
        return Judgment(text, attempts=attempts)

    def _content(self, data: Any) -> str:
        """The answer's text; a reply that is not a chat completion is worth a retry."""
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise Retryable("malformed response (not an OpenAI chat completion)") from None
        if content is None:  # e.g. a reasoning model that spent max_tokens thinking
            log.warning("judge %s: empty answer (content null); raise judge max_tokens?",
                        self.model)
            return ""
        if not isinstance(content, str):
            raise Retryable("malformed response (message content is not text)")
        return content


JUDGE_KEYS = ("base_url", "model", "api_key_env", "concurrency", "timeout", "max_retries",
              "temperature", "max_tokens", "backoff_base", "backoff_max", "max_response_bytes")


def check_judge_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``options["judge"]`` without contacting anyone; returns the judge settings.

    Raises UserError naming every problem: no judge, unknown keys, an API key variable
    that is not set.
    """
    spec = {k: v for k, v in dict(options.get("judge") or {}).items() if v is not None}
    problems = []
    if not spec.get("base_url") or not spec.get("model"):
        problems.append("this task needs a judge: give --judge-base-url and --judge-model, "
                        "or judge: {base_url, model} in the study's benchmark entry")
    unknown = sorted(set(spec) - set(JUDGE_KEYS))
    if unknown:
        problems.append(f"judge: unknown option(s) {', '.join(unknown)} "
                        f"(known: {', '.join(JUDGE_KEYS)})")
    env = spec.get("api_key_env")
    if env and not os.environ.get(env):
        problems.append(f"judge: environment variable {env} (the API key) is not set")
    if problems:
        raise UserError(problems)
    return spec


def judge_from_options(options: dict[str, Any]) -> JudgeClient:
    """Build the judge from a task's options: ``options["judge"]`` (a dict with
    ``base_url``, ``model`` and optionally the other :data:`JUDGE_KEYS`) and
    ``options["judge_cache"]`` (path of the SQLite cache; default: ``judgments.sqlite``
    in ``options["output_dir"]`` when given, else the user cache folder)."""
    spec = check_judge_options(options)
    cache_path = options.get("judge_cache")
    if cache_path is None and options.get("output_dir"):
        cache_path = Path(options["output_dir"]) / "judgments.sqlite"
    cache = JudgmentCache(cache_path or default_cache_path())
    base_url, model = spec.pop("base_url"), spec.pop("model")
    return JudgeClient(base_url, model, cache=cache, **spec)
