"""The ``openai`` backend: any OpenAI-compatible server's ``/v1/completions``.

Base URL and key come from arguments or the environment (``OPENAI_BASE_URL``,
``OPENAI_API_KEY``); the key is never written anywhere (provenance records only
whether one was set). Requests go through :class:`sftlab.httpclient.JSONClient`, the one
HTTP client and retry policy (429 / 5xx / timeouts / connection errors retried with
backoff; a total deadline per attempt and a cap on the answer's size).

Log-likelihoods use ``echo=True, logprobs=1, max_tokens=0`` on ``prompt =
context + continuation``: the server returns the prompt's token log-probabilities
and text offsets; the continuation's tokens are those starting at or after the
context's length. A server without prompt log-probabilities gets a clear error.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from sftlab.models.generation import cut_at_stop

log = logging.getLogger(__name__)

class OpenAIBackend:
    """Completions from an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, max_retries: int = 6, backoff: float = 1.0,
                 concurrency: int = 8, transport: Any = None,
                 max_response_bytes: int | None = None) -> None:
        from sftlab.httpclient import DEFAULT_MAX_RESPONSE_BYTES, JSONClient

        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        if not self.base_url:
            raise UserError("openai backend: no server URL (give --base-url or set OPENAI_BASE_URL)")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._has_key = bool(key)
        self.max_retries, self.backoff, self.concurrency = max_retries, backoff, concurrency
        self.client = JSONClient(self.base_url, headers=headers, timeout=timeout,
                                 max_retries=max_retries, backoff_base=backoff,
                                 max_connections=concurrency, transport=transport,
                                 max_response_bytes=max_response_bytes or
                                 DEFAULT_MAX_RESPONSE_BYTES, name="openai backend")

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /completions (retried on transient failures by the shared policy)."""
        from sftlab.httpclient import RequestFailed

        try:
            data, _ = self.client.post("completions", payload)
        except RequestFailed as err:
            raise UserError(f"openai backend: {self.base_url}/completions failed: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"openai backend: {self.base_url}/completions answered JSON that is "
                            "not an object")
        return data

    def _map(self, fn: Any, items: list[Any]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self._map(self._one_loglikelihood, requests)

    def _one_loglikelihood(self, req: LoglikelihoodRequest) -> LoglikelihoodResult:
        data = self._post({"model": self.model, "prompt": req.context + req.continuation,
                           "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0})
        lp = (data.get("choices") or [{}])[0].get("logprobs") or {}
        tokens, offsets = lp.get("token_logprobs"), lp.get("text_offset")
        if not tokens or offsets is None:
            raise UserError(f"openai backend: {self.base_url} returned no prompt log-probabilities "
                            "(echo=True, logprobs); log-likelihood tasks need a server that does "
                            "(e.g. vLLM's OpenAI server)")
        start = len(req.context)
        idx = [i for i, off in enumerate(offsets) if off >= start and tokens[i] is not None]
        if not idx:
            raise UserError("openai backend: the continuation has no tokens in the server's answer")
        top = lp.get("top_logprobs") or [None] * len(tokens)
        greedy = all(top[i] is None or max(top[i].values()) <= tokens[i] + 1e-6 for i in idx)
        return LoglikelihoodResult(sum(tokens[i] for i in idx), greedy, len(idx))

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        return self._map(self._one_generate, requests)

    def _one_generate(self, req: GenerateRequest) -> GenerateResult:
        payload: dict[str, Any] = {"model": self.model, "prompt": req.prompt,
                                   "max_tokens": req.max_new_tokens, "n": req.n,
                                   "temperature": req.temperature, "top_p": req.top_p,
                                   "seed": req.seed}
        if req.stop:
            payload["stop"] = list(req.stop)[:4]  # the OpenAI API accepts at most 4
        data = self._post(payload)
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        texts = [cut_at_stop(c.get("text", ""), req.stop) for c in choices]
        usage = data.get("usage") or {}
        return GenerateResult(texts, int(usage.get("prompt_tokens", 0)), [])

    def provenance(self) -> dict[str, Any]:
        import httpx

        return {"backend": self.name, "model": self.model, "base_url": self.base_url,
                "api_key_set": self._has_key, "concurrency": self.concurrency,
                "versions": {"httpx": httpx.__version__}}
