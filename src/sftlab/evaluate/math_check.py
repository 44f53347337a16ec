"""Math answer checking with Math-Verify, in worker processes with an outer timeout.

Math-Verify's own timeouts use ``signal.alarm`` and break in threads, and a sympy
simplification can run for minutes. So every check runs in a small pool of worker
processes (plain subprocesses speaking JSON lines) with its inner timeouts off;
an item that runs past ``timeout`` seconds becomes ``outcome="timeout"`` and only
its worker is killed and replaced: the rest of the batch goes on.

Gold answers and model outputs are both parsed with LaTeX extraction that prefers
the last ``\\boxed{}`` (priority 0), then plain expressions: ``verify(parse(gold),
parse(output))`` as BENCHMARKS.md specifies for MATH.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_SHOW_CHARS = 200
_WORKER_MEMORY = 4 << 30  # bytes of address space per worker


@dataclass(frozen=True)
class MathResult:
    """One check. ``correct`` is None when it could not be decided (gold unparsable,
    worker crash); a timeout or an unparsable prediction counts as incorrect."""

    correct: bool | None
    gold_parsed: str
    pred_parsed: str
    outcome: str  # "ok" | "parse_failure" | "timeout" | "error"


def verify_batch(
    pairs: list[tuple[str, str]], *, timeout: float = 5.0, workers: int | None = None
) -> list[MathResult]:
    """Check each ``(gold, prediction)`` pair; results in input order.

    ``gold`` is a reference solution or answer (LaTeX, ``\\boxed{}`` preferred);
    ``prediction`` the model's raw output.
    """
    tasks = [("gold", gold, pred) for gold, pred in pairs]
    return [MathResult(*r) for r in _run_tasks(tasks, timeout, workers)]


def equivalent(a: str, b: str, *, timeout: float = 5.0) -> bool:
    """Whether two model answers are the same (checked in both directions, since
    ``verify`` is asymmetric); for clustering samples (maj@k)."""
    return equivalence_matrix([a, b], timeout=timeout)[0][1]


def equivalence_matrix(
    answers: list[str], *, timeout: float = 5.0, workers: int | None = None
) -> list[list[bool]]:
    """Symmetric matrix of :func:`equivalent` over all pairs of ``answers``."""
    return equivalence_matrices([answers], timeout=timeout, workers=workers)[0]


def equivalence_matrices(
    groups: list[list[str]], *, timeout: float = 5.0, workers: int | None = None
) -> list[list[list[bool]]]:
    """One :func:`equivalence_matrix` per group (e.g. the samples of each item), all
    pairs of all groups checked in one batch of the worker pool."""
    pairs = [(g, i, j) for g, answers in enumerate(groups)
             for i in range(len(answers)) for j in range(i + 1, len(answers))]
    tasks = [("equiv", groups[g][i], groups[g][j]) for g, i, j in pairs]
    matrices = [[[i == j for j in range(len(a))] for i in range(len(a))] for a in groups]
    for (g, i, j), result in zip(pairs, _run_tasks(tasks, timeout, workers), strict=True):
        matrices[g][i][j] = matrices[g][j][i] = bool(result[0])
    return matrices


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed x``) in
    ``text``, braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    marker = "\\boxed" if text.startswith("\\boxed", start) else "\\fbox"
    rest = text[start + len(marker) :]
    if rest.startswith(" "):  # "\boxed 5": up to the next "$" or end of line
        return rest[1:].split("$")[0].splitlines()[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return rest[1:i]
    return None  # unbalanced


def extract_marked(text: str, marker: str) -> str | None:
    """The answer after the last ``marker`` in ``text`` (``"####"``, ``"The answer is"``):
    the rest of its line, without the ``:`` / spaces / final ``.`` around it; None when
    the marker is absent or nothing follows it on its line."""
    start = text.rfind(marker)
    if start < 0:
        return None
    answer = text[start + len(marker):].split("\n", 1)[0].strip().lstrip(":").strip()
    return answer.removesuffix(".").strip() or None


def final_answer(text: str, marker: str | None = None) -> str | None:
    """The final answer of ``text``: what comes last of its last ``\\boxed{}`` and its
    ``marker``'s answer (:func:`extract_marked`); None when it has neither."""
    boxed = extract_boxed(text) or None
    marked = extract_marked(text, marker) if marker else None
    if boxed is None or marked is None:
        return boxed or marked
    return marked if text.rfind(marker) > max(text.rfind("\\boxed"), text.rfind("\\fbox")) \
        else boxed


# ------------------------------------------------------------------ worker side


def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _show(parsed: list) -> str:
    if not parsed:
        return ""
    shown = parsed[-1] if isinstance(parsed[-1], str) else parsed[0]
    return str(shown)[:_SHOW_CHARS]


def _check(kind: str, a: str, b: str) -> tuple[bool | None, str, str, str]:
    """(correct, gold_parsed, pred_parsed, outcome) for one task, in a worker."""
    from math_verify import parse, verify

    config = _configs()
    pa = parse(a, config, parsing_timeout=None)
    pb = parse(b, config, parsing_timeout=None)
    shown_a, shown_b = _show(pa), _show(pb)
    if kind == "equiv":
        if not pa or not pb:
            same = bool(a.strip()) and a.strip() == b.strip()
            return same, shown_a, shown_b, "parse_failure"
        same = verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)
        return same, shown_a, shown_b, "ok"
    if not pa:
        return None, "", shown_b, "error"
    if not pb:
        return False, shown_a, "", "parse_failure"
    return bool(verify(pa, pb, timeout_seconds=None)), shown_a, shown_b, "ok"


def _worker_main() -> None:
    """Worker process: answer JSON lines ``[index, kind, a, b]`` on stdin with
    ``[index, correct, gold_parsed, pred_parsed, outcome]`` on stdout."""
    import ctypes
    import resource
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the evaluator
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)  # a runaway sympy gets MemoryError
    soft = _WORKER_MEMORY if hard == resource.RLIM_INFINITY else min(_WORKER_MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    import math_verify  # noqa: F401  (imported before the first request is timed)

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        index, kind, a, b = json.loads(line)
        try:
            result = _check(kind, a, b)
        except Exception as exc:  # a bug on one item must not end the worker
            result = (None, "", f"{type(exc).__name__}: {exc}"[:_SHOW_CHARS], "error")
        out.write(json.dumps([index, *result]) + "\n")
        out.flush()


# ------------------------------------------------------------------ parent side


class _Worker:
    """One worker process (a plain subprocess: no main-module re-import, no fork of
    a threaded evaluator)."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sftlab.evaluate.math_check import _worker_main; _worker_main()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=False,
        )
        self.buffer = b""
        self.ready = False
        self.task: tuple[int, float] | None = None  # (index, started at)

    def fileno(self) -> int:
        return self.process.stdout.fileno()

    def send(self, message: list) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self) -> list[str] | None:
        """Complete lines read so far; None when the worker has died."""
        chunk = os.read(self.fileno(), 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for f in (self.process.stdin, self.process.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Pool:
    """Worker processes kept across calls (each start imports sympy, ~1-2 s)."""

    def __init__(self, size: int):
        self.workers = [_Worker() for _ in range(size)]
        self.deaths_before_ready = 0

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []

    def run(self, tasks: list[tuple[str, str, str]], timeout: float) -> list[tuple]:
        from multiprocessing.connection import wait

        results: list[tuple | None] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        while queue or any(w.task for w in self.workers):
            for w in self.workers:
                if w.ready and w.task is None and queue:
                    index = queue.popleft()
                    w.task = (index, time.monotonic())
                    w.send([index, *tasks[index]])
            ready = wait(self.workers, timeout=self._wait_time(timeout))
            for w in list(self.workers):
                if w in ready:
                    self._receive(w, results)
                elif w.task and time.monotonic() - w.task[1] > timeout:
                    results[w.task[0]] = (False, "", "", "timeout")
                    self._replace(w)
        return [r if r is not None else (None, "", "", "error") for r in results]

    def _wait_time(self, timeout: float) -> float:
        started = [w.task[1] for w in self.workers if w.task]
        if not started:
            return 1.0
        return max(0.0, min(started) + timeout - time.monotonic()) + 0.01

    def _receive(self, w: _Worker, results: list) -> None:
        lines = w.receive()
        if lines is None:  # the worker died (crash, memory)
            if not w.ready:
                self.deaths_before_ready += 1
                if self.deaths_before_ready > 3:
                    raise RuntimeError("Math-Verify workers die on start-up")
            if w.task:
                results[w.task[0]] = (None, "", "", "error")
            self._replace(w)
            return
        for line in lines:
            if line == "ready":
                w.ready = True
                continue
            index, *result = json.loads(line)
            results[index] = tuple(result)
            w.task = None

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers[self.workers.index(w)] = _Worker()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _run_tasks(
    tasks: list[tuple[str, str, str]], timeout: float, workers: int | None
) -> list[tuple]:
    global _POOL
    if not tasks:
        return []
    size = max(1, min(workers or min(4, os.cpu_count() or 1), len(tasks)))
    with _POOL_LOCK:
        if _POOL is None or len(_POOL.workers) < size:
            if _POOL is not None:
                _POOL.close()
            _POOL = _Pool(size)
        return _POOL.run(tasks, timeout)


@atexit.register
def shutdown() -> None:
    """Stop the worker processes (also run when the evaluator exits)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None
