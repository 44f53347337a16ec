"""Job records: what the driver hands an executor, and what comes back.

A :class:`Job` is plain data (JSON-serialisable): which handler to call
(``"module:function"`` or ``"/path/file.py:function"``), its payload, and the
store units it completes. Executors never look inside the payload; the handler
gets it and returns a JSON-serialisable dict. Files of a job live in
``<out_dir>/jobs/``: ``<id>.json`` (the job), ``<id>.log`` (its output) and
``<id>.result.json`` (written atomically by the worker when the handler returns).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOG_TAIL_CHARS = 4000


@dataclass
class Job:
    """One unit of execution: a handler call with its payload."""

    id: str
    kind: str  # prepare | train | evaluate (or any name a test uses)
    handler: str  # "package.module:function" or "/abs/file.py:function"
    payload: dict[str, Any]
    units: dict[str, float] = field(default_factory=dict)  # store unit id -> work share
    gpus: int = 0
    cpus: int = 1
    label: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


@dataclass
class JobOutcome:
    """What became of a job: ``ok`` with the handler's ``result``, or an error."""

    job: Job
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    log_tail: str = ""
    seconds: float = 0.0


def job_paths(jobs_dir: Path, job_id: str) -> tuple[Path, Path, Path]:
    """(job file, log file, result file) of ``job_id`` under ``jobs_dir``."""
    return (jobs_dir / f"{job_id}.json", jobs_dir / f"{job_id}.log",
            jobs_dir / f"{job_id}.result.json")


def load_handler(spec: str) -> Callable[[dict], dict]:
    """Import ``"module:function"`` or ``"/path/file.py:function"``."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"handler must look like 'module:function', got {spec!r}")
    if target.endswith(".py"):
        module_name = "sftlab_job_" + Path(target).stem
        loaded = importlib.util.spec_from_file_location(module_name, target)
        if loaded is None or loaded.loader is None:
            raise ImportError(f"cannot load handler file {target}")
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def call_handler(job: Job) -> dict[str, Any]:
    """Run ``job``'s handler; never raises: ``{"ok": True, "result": ...}`` or an error."""
    try:
        result = load_handler(job.handler)(job.payload)
        json.dumps(result, default=str)  # a result must survive the trip back
        return {"ok": True, "result": result}
    except BaseException as err:  # noqa: BLE001 - a job's failure is data for the driver
        if isinstance(err, KeyboardInterrupt):
            raise
        return {"ok": False, "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-LOG_TAIL_CHARS:]}


def read_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a text file ('' when absent)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars * 2))
            return fh.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""
