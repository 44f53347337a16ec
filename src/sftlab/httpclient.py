"""Every outbound HTTP call (judge, OpenAI backend, synthetic-data client): one client, one
retry policy, a total deadline per attempt and a cap on the size of an answer.

:class:`JSONClient` POSTs JSON with httpx and returns the decoded answer. Each attempt has

- a **deadline**: ``timeout`` seconds in all, connecting, sending, waiting and reading
  included. The deadline is enforced at every socket read and write, so a server that
  trickles its answer a byte at a time is cut off on time (httpx's own timeouts apply
  per read and never fire against it);
- a **size cap**: an answer larger than ``max_response_bytes`` is refused (not retried),
  whether or not it announces its length.

The retry policy (tenacity) retries :data:`RETRY_STATUS` answers, timeouts, connection
errors and answers that are not the expected JSON (``parse`` may raise :class:`Retryable`),
with exponential backoff and full jitter, honouring ``Retry-After``; any other 4xx is
fatal. When the attempts are spent, or on a fatal answer, :class:`RequestFailed` says why
and after how many attempts.
"""

from __future__ import annotations

import contextvars
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpcore
import httpx
import tenacity

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


class Retryable(Exception):
    """A failure worth another attempt (``retry_after``: seconds the server asked for)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RequestFailed(Exception):
    """The request did not succeed: a fatal answer, or every attempt failed."""

    def __init__(self, message: str, attempts: int, status: int | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class _Fatal(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class JSONClient:
    """POST JSON, get JSON: bounded in time and size, retried by one policy."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 60.0, max_retries: int = 5, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, max_connections: int = 8,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 transport: httpx.BaseTransport | None = None, name: str = "http"):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_response_bytes = max_response_bytes
        self.name = name
        limits = httpx.Limits(max_connections=max_connections)
        self._http = httpx.Client(headers=headers, timeout=timeout, limits=limits,
                                  transport=transport or DeadlineTransport(limits=limits))

    def close(self) -> None:
        self._http.close()

    def post(self, path: str, body: dict[str, Any],
             parse: Callable[[Any], Any] = lambda data: data) -> tuple[Any, int]:
        """(``parse(answer JSON)``, attempts used); raises :class:`RequestFailed`."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Retryable),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait, before_sleep=self._log_retry, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    return parse(self._attempt(path, body)), attempt.retry_state.attempt_number
        except Retryable as err:
            raise RequestFailed(f"gave up after {self.max_retries + 1} attempts: {err}",
                                self.max_retries + 1) from None
        except _Fatal as err:
            raise RequestFailed(str(err), retrying.statistics.get("attempt_number", 1),
                                err.status) from None
        raise AssertionError("unreachable")

    def _attempt(self, path: str, body: dict[str, Any]) -> Any:
        url = f"{self.base_url}/{path.lstrip('/')}"
        token = _deadline.set(time.monotonic() + self.timeout)
        try:
            with self._http.stream("POST", url, json=body) as resp:
                data = self._read(resp)
        except httpx.TimeoutException:
            raise Retryable(f"timed out after {self.timeout}s") from None
        except httpx.TransportError as err:
            raise Retryable(f"connection error: {type(err).__name__}") from None
        finally:
            _deadline.reset(token)
        if resp.status_code in RETRY_STATUS:
            raise Retryable(f"HTTP {resp.status_code}", _retry_after(resp))
        if resp.status_code >= 400:
            raise _Fatal(f"HTTP {resp.status_code}: {_error_message(data)}", resp.status_code)
        try:
            return json.loads(data)
        except ValueError:
            raise Retryable("malformed response (not JSON)") from None

    def _read(self, resp: httpx.Response) -> bytes:
        cap = self.max_response_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _Fatal(f"the answer is {int(declared):,} bytes, over the cap of {cap:,}")
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise _Fatal(f"the answer is over the cap of {cap:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Full-jitter exponential backoff; at least what ``Retry-After`` asked for."""
        err = state.outcome.exception() if state.outcome else None
        backoff = random.uniform(0, min(self.backoff_max,
                                        self.backoff_base * 2 ** (state.attempt_number - 1)))
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            return min(self.backoff_max, max(retry_after, backoff))
        return backoff

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("%s: %s; retry %d/%d in %.1fs", self.name, err, state.attempt_number,
                    self.max_retries, state.upcoming_sleep)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over a network backend whose every read, write and connect is
    bounded by the current attempt's deadline."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # httpx builds the httpcore pool without a way to pass its network backend
        self._pool._network_backend = _DeadlineBackend()


def _bounded(timeout: float | None) -> float | None:
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_tcp(host, port, _bounded(timeout),
                                                         local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(path, _bounded(timeout),
                                                                 socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return data[:300].decode("utf-8", "replace")
