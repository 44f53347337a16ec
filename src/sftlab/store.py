"""The study store: one SQLite file per study (WAL), written by the driver alone.

Tables (schema version in ``PRAGMA user_version``):

- ``units``: one row per unit of work of the plan — a training set to prepare
  (``stage='prepare'``, id ``data-<key>``), a run to train (``'train'``, id = run
  id), an evaluation (``'evaluate'``, id = eval id). ``state`` is ``pending``,
  ``running``, ``done`` or ``failed``; ``seconds`` and ``work`` measure throughput
  (work = examples x epochs for training, 1 per evaluation, examples for prepare).
  ``planned`` is 1 for units of the study as it was last planned.
- ``runs``: the labels of each run (model, method, setting, datasets, size ...).
- ``results``: one row per finished evaluation, with the labels copied in, so
  that ``sftlab results`` and the report read one table.
- ``meta``: key/value (study name, executor slots ...).

A unit is ``done`` only once its artefacts are complete on disk and its row is
committed; every state change is one transaction. :class:`DriverLock` stops a
second driver on the same study (``fcntl.flock`` on ``<out_dir>/.driver.lock``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.sampling import SAMPLED_METRIC

SCHEMA_VERSION = 1
STORE_NAME = "store.sqlite"
LOCK_NAME = ".driver.lock"
STATES = ("pending", "running", "done", "failed")
STAGES = ("prepare", "train", "evaluate")
RESULT_COLUMNS = ("run_id", "model", "method", "setting", "datasets", "size", "epoch", "task",
                  "shots", "format", "metric", "value", "stderr", "n", "eval_id",
                  "predictions_path")
RUN_COLUMNS = ("run_id", "model", "method", "method_type", "setting", "datasets", "size",
               "epochs", "data_key", "left_out")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    target TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    label TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    work REAL NOT NULL DEFAULT 1,
    seconds REAL,
    error TEXT,
    log_tail TEXT,
    planned INTEGER NOT NULL DEFAULT 1,
    updated REAL
);
CREATE INDEX IF NOT EXISTS units_stage_state ON units(stage, state, planned, work, seconds);
CREATE INDEX IF NOT EXISTS units_target ON units(stage, target, planned, state);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, model TEXT, method TEXT, method_type TEXT, setting TEXT,
    datasets TEXT, size INTEGER, epochs INTEGER, data_key TEXT, left_out TEXT
);
CREATE TABLE IF NOT EXISTS results (
    eval_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL, model TEXT, method TEXT, setting TEXT, datasets TEXT,
    size INTEGER, epoch INTEGER, task TEXT, shots INTEGER, format TEXT, metric TEXT,
    value REAL, stderr REAL, n INTEGER, predictions_path TEXT, version TEXT,
    extra TEXT, provenance TEXT, created REAL
);
"""


def crash_point(name: str) -> None:
    """Test seam: SIGKILL this process at ``name`` when ``SFTLAB_CRASH_AT`` says so.

    Lets the crash-safety tests kill the driver at an exact moment (mid-transaction
    of a store write, right after a job starts); a no-op otherwise.
    """
    if os.environ.get("SFTLAB_CRASH_AT") != name:
        return
    time.sleep(float(os.environ.get("SFTLAB_CRASH_DELAY", "0")))
    os.kill(os.getpid(), signal.SIGKILL)


class DriverLock:
    """An exclusive lock on a study folder, held by the one driver writing its store.

    The lock is an ``flock`` on ``<out_dir>/.driver.lock``; the kernel releases it
    when the driver exits, however it exits (a SIGKILLed driver leaves no stale lock).
    """

    def __init__(self, out_dir: Path | str, study_name: str = "", command: str = "run"):
        self.path = Path(out_dir) / LOCK_NAME
        self.study_name = study_name
        self.command = command  # who holds it: `sftlab run` or `sftlab train`
        self._fh = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            head, sep, command = holder.rpartition(" by ")
            command, holder = (command, head) if sep and command.startswith("sftlab ") else (
                "sftlab run", holder)
            raise UserError(
                f"another `{command}` is driving study '{self.study_name}' ({holder}); "
                "wait for it to finish or stop it, then run again",
                where=str(self.path.parent)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')} by sftlab {self.command}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def damaged_store(path: Path, err: Exception) -> UserError:
    """The error for a store SQLite cannot read: what to do about it."""
    return UserError(f"the study store is damaged or not a SQLite file ({err}): move it aside "
                     f"(mv {path} {path}.broken) and run `sftlab run` again; the store is "
                     "rebuilt from the artefacts on disk (checkpoints, evals/*.json)",
                     where=str(path))


class Store:
    """The study's SQLite store. Open with :meth:`open` (writer) or :meth:`read` (reader)."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path | str) -> Store:
        """Open (creating if needed) the store for writing; only the driver does this."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            conn.close()
            raise damaged_store(path, err) from None
        if version > SCHEMA_VERSION:
            conn.close()
            raise UserError(f"store schema version {version} is newer than this sftlab "
                            f"({SCHEMA_VERSION}); upgrade sftlab", where=str(path))
        conn.executescript(_SCHEMA)  # idempotent DDL; the version is set last
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return cls(conn, path)

    @classmethod
    def read(cls, path: Path | str) -> Store:
        """Open an existing store read-only (status, results, report)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"no store at {path}: run `sftlab run` on the study first")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError:
            if os.access(path.parent, os.W_OK):
                raise
            # a read-only folder: SQLite cannot create the WAL index beside the file, so
            # read the file as it is (nothing can be writing it there)
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=30)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise damaged_store(path, err) from None
        if version != SCHEMA_VERSION:
            conn.close()
            raise UserError(f"store schema version {version}, this sftlab reads "
                            f"{SCHEMA_VERSION}", where=str(path))
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ meta

    def set_meta(self, **values: Any) -> None:
        with _transaction(self.conn):
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------ plan sync

    def sync_units(self, units: Iterable[tuple], runs: Iterable[tuple]) -> None:
        """Record the plan: insert new units and runs, mark units no longer planned.

        ``units`` are ``(id, stage, target, epoch, label, work)`` tuples; ``runs``
        follow :data:`RUN_COLUMNS`. Existing units keep their state.
        """
        now = time.time()
        with _transaction(self.conn):
            self.conn.execute("UPDATE units SET planned = 0")
            self.conn.executemany(
                "INSERT INTO units (id, stage, target, epoch, label, work, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET planned = 1, "
                "label = excluded.label, work = excluded.work",
                [(*u, now) for u in units])
            self.conn.executemany(
                f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * len(RUN_COLUMNS))})", runs)

    def reset_interrupted(self, *, retry_failed: bool = False) -> int:
        """After a driver restart: ``running`` units go back to ``pending`` (and
        ``failed`` ones too with ``retry_failed``). Returns how many changed."""
        states = ("running", "failed") if retry_failed else ("running",)
        with _transaction(self.conn):
            cur = self.conn.execute(
                f"UPDATE units SET state = 'pending', error = NULL, log_tail = NULL "
                f"WHERE state IN ({', '.join('?' * len(states))})", states)
        return cur.rowcount

    def states(self, stage: str | None = None) -> dict[str, str]:
        """``{unit id: state}`` of planned units (of one stage)."""
        sql = "SELECT id, state FROM units WHERE planned = 1"
        args: tuple = ()
        if stage:
            sql += " AND stage = ?"
            args = (stage,)
        return dict(self.conn.execute(sql, args).fetchall())

    def set_state(self, ids: Iterable[str], state: str, *, error: str | None = None,
                  log_tail: str | None = None, seconds: float | None = None) -> None:
        """Move units to ``state`` in one transaction (``running`` counts an attempt)."""
        assert state in STATES, state
        ids = list(ids)
        bump = 1 if state == "running" else 0
        with _transaction(self.conn):
            self.conn.executemany(
                "UPDATE units SET state = ?, error = ?, log_tail = ?, "
                "seconds = COALESCE(?, seconds), attempts = attempts + ?, updated = ? "
                "WHERE id = ?",
                [(state, error, log_tail, seconds, bump, time.time(), i) for i in ids])

    def mark_done(self, ids_seconds: dict[str, float | None]) -> None:
        """Mark units done, each with its measured seconds (None: not measured)."""
        with _transaction(self.conn):
            self.conn.executemany(
                "UPDATE units SET state = 'done', error = NULL, log_tail = NULL, "
                "seconds = ?, updated = ? WHERE id = ?",
                [(s, time.time(), i) for i, s in ids_seconds.items()])

    # ------------------------------------------------------------------ results

    def add_results(self, rows: list[dict], seconds: dict[str, float | None] | None = None
                    ) -> None:
        """Insert evaluation results and mark their units done, in one transaction.

        Inserting a result twice replaces it (never a duplicate row).
        """
        cols = ("eval_id", "run_id", "model", "method", "setting", "datasets", "size", "epoch",
                "task", "shots", "format", "metric", "value", "stderr", "n",
                "predictions_path", "version", "extra", "provenance", "created")
        now = time.time()
        values = [tuple(_cell(r.get(c), now if c == "created" else None) for c in cols)
                  for r in rows]
        seconds = seconds or {}
        with _transaction(self.conn):
            self.conn.executemany(
                f"INSERT OR REPLACE INTO results ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})", values)
            crash_point("store-write")
            self.conn.executemany(
                "UPDATE units SET state = 'done', error = NULL, log_tail = NULL, seconds = ?, "
                "updated = ? WHERE id = ?",
                [(seconds.get(r["eval_id"]), now, r["eval_id"]) for r in rows])

    def result_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT eval_id FROM results")}

    def run_labels(self) -> dict[str, dict]:
        cur = self.conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs")
        return {row[0]: dict(zip(RUN_COLUMNS, row, strict=True)) for row in cur}

    def results(self, *, planned_only: bool = True, sampled: bool = False) -> list[dict]:
        """Every stored result as a flat dict (:data:`RESULT_COLUMNS`); with ``sampled``, a
        sampled evaluation's pass@K / cons@K / maj@K follow its row as rows of their own."""
        sql = f"SELECT {', '.join('r.' + c for c in RESULT_COLUMNS)}, r.extra FROM results r"
        if planned_only:
            sql += " JOIN units u ON u.id = r.eval_id WHERE u.planned = 1"
        sql += (" ORDER BY r.model, r.method != 'base', r.method, r.size, r.setting, r.datasets, "
                "r.run_id, r.epoch, r.task, r.shots, r.format")  # each model's base rows first
        out = []
        for *row, extra in self.conn.execute(sql):
            out.append(dict(zip(RESULT_COLUMNS, row, strict=True)))
            if sampled and extra:
                values = json.loads(extra)
                names = sorted((m for m in values if SAMPLED_METRIC.fullmatch(m) and m != out[-1]["metric"]),
                               key=_sampled_order)
                out += [{**out[-1], "metric": m, "value": values[m],
                         "stderr": values.get(f"{m}_stderr")} for m in names]
        return out

    # ------------------------------------------------------------------ status

    def counts(self) -> dict[str, dict[str, int]]:
        """``{stage: {state: count}}`` of planned units."""
        out = {s: dict.fromkeys(STATES, 0) for s in STAGES}
        for stage, state, n in self.conn.execute(
                "SELECT stage, state, COUNT(*) FROM units WHERE planned = 1 "
                "GROUP BY stage, state"):
            out.setdefault(stage, dict.fromkeys(STATES, 0))[state] = n
        return out

    def throughput(self) -> dict[str, dict[str, float]]:
        """Measured ``{stage: {seconds, work, seconds_per_work, remaining_work}}``."""
        out: dict[str, dict[str, float]] = {}
        for stage, state, seconds, measured, work in self.conn.execute(
                "SELECT stage, state, SUM(seconds), SUM(CASE WHEN seconds IS NOT NULL "
                "THEN work END), SUM(work) FROM units WHERE planned = 1 GROUP BY stage, state"):
            tp = out.setdefault(stage, {"seconds": 0.0, "work": 0.0, "remaining_work": 0.0})
            if state == "done":
                tp["seconds"] += seconds or 0.0
                tp["work"] += measured or 0.0
            elif state in ("pending", "running"):
                tp["remaining_work"] += work or 0.0
        for tp in out.values():
            tp["seconds_per_work"] = tp["seconds"] / tp["work"] if tp["work"] else None
        return out

    def failures(self, limit: int = 50) -> list[dict]:
        cur = self.conn.execute(
            "SELECT id, stage, target, epoch, label, attempts, error, log_tail FROM units "
            "WHERE planned = 1 AND state = 'failed' ORDER BY updated LIMIT ?", (limit,))
        keys = ("id", "stage", "target", "epoch", "label", "attempts", "error", "log_tail")
        return [dict(zip(keys, row, strict=True)) for row in cur]

    def per_run(self) -> list[dict]:
        """One row per planned run: labels, training state, evaluations done / total."""
        evals = {t: (d, f, n) for t, d, f, n in self.conn.execute(
            "SELECT target, SUM(state = 'done'), SUM(state = 'failed'), COUNT(*) FROM units "
            "WHERE stage = 'evaluate' AND planned = 1 GROUP BY target")}
        cur = self.conn.execute(
            "SELECT r.run_id, r.model, r.method, r.setting, r.datasets, r.size, r.epochs, "
            "t.state FROM runs r CROSS JOIN units t ON t.id = r.run_id AND t.planned = 1 "
            "ORDER BY r.model, r.method, r.size, r.setting, r.datasets")
        keys = ("run_id", "model", "method", "setting", "datasets", "size", "epochs", "train")
        out = []
        for row in cur:
            done, failed, total = evals.get(row[0], (0, 0, 0))
            out.append({**dict(zip(keys, row, strict=True)), "evals_done": done,
                        "evals_failed": failed, "evals_total": total})
        return out


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *rest) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _sampled_order(metric: str) -> tuple[int, int]:
    """pass@K, then cons@K, then maj@K, each by K."""
    kind, k = SAMPLED_METRIC.fullmatch(metric).groups()
    return ("pass", "cons", "maj").index(kind), int(k)


def _cell(value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value
