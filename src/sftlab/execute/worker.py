"""The job worker: ``python -m sftlab.execute.worker JOB.json`` (one job), or
``python -m sftlab.execute.worker --serve`` (the local executor's reusable worker).

One job: run the handler, write ``<id>.result.json`` beside the job file, exit 0
(or 1 when the handler failed). Serve mode reads job-file paths from stdin, one
per line; for each it sends its output to ``<id>.log``, runs the job, writes the
result file, and answers ``done <id>`` on its original stdout (the driver's
control pipe). A worker that crashes (segfault, OOM kill) takes only its current
job with it: the driver sees the process gone and records the log tail.

A worker dies with its driver (``PR_SET_PDEATHSIG`` on Linux), so a killed driver
leaves no orphan writing checkpoints behind its back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

from sftlab import atomic, jsonio
from sftlab.execute.jobs import Job, call_handler, job_paths


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit if it already has."""
    expected = os.environ.get("SFTLAB_DRIVER_PID")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if expected and os.getppid() != int(expected):
        os._exit(1)


def run_job_file(path: Path) -> bool:
    """Run the job in ``path``; write its result file; return whether it succeeded."""
    job = Job.from_json(path.read_text(encoding="utf-8"))
    _, _, result_path = job_paths(path.parent, job.id)
    start = time.perf_counter()
    outcome = call_handler(job)
    outcome["seconds"] = time.perf_counter() - start
    if not outcome["ok"]:
        print(outcome["traceback"], file=sys.stderr)
    atomic.write_text(result_path, jsonio.dumps(outcome))
    return bool(outcome["ok"])


def serve(max_jobs: int = 0) -> None:
    """Run jobs named on stdin until EOF (or ``max_jobs`` jobs, when > 0)."""
    control = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    done = 0
    for line in sys.stdin:
        path = Path(line.strip())
        if not line.strip():
            continue
        job_id = path.name.removesuffix(".json")
        _, log_path, _ = job_paths(path.parent, job_id)
        with open(log_path, "a", encoding="utf-8") as log:
            _redirect(log.fileno())
            try:
                run_job_file(path)
            finally:
                _redirect(devnull)
        control.write(f"done {job_id}\n")
        done += 1
        if max_jobs and done >= max_jobs:
            break


def _redirect(fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    import logging

    logging.basicConfig(level=os.environ.get("SFTLAB_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args and args[0] == "--serve":
        serve(int(args[1]) if len(args) > 1 else 0)
        return 0
    if len(args) != 1:
        print("usage: python -m sftlab.execute.worker JOB.json | --serve [MAX_JOBS]",
              file=sys.stderr)
        return 2
    return 0 if run_job_file(Path(args[0])) else 1


if __name__ == "__main__":
    sys.exit(main())
