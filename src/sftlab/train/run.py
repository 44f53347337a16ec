"""Train one run: resume from the newest complete epoch, checkpoint every epoch.

``train_run(study, run)`` is what the orchestrator calls (in a subprocess per
job); ``train_on_rows(model_path, rows, cfg, out_dir)`` is the same without a
study file (tests, benchmarks). Both are no-ops once a run is complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from sftlab import jsonio
from sftlab.errors import UserError
from sftlab.train import checkpoints
from sftlab.train.config import TrainConfig

log = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"


def checkpoint_dir(study, run_id: str, epoch: int) -> Path:
    """``<output_dir>/ckpt/<run_id>/epoch-<epoch>`` (it exists only when complete)."""
    return checkpoints.epoch_dir(checkpoints.run_dir(study.out_dir, run_id), epoch)


def completed_epochs(study, run_id: str) -> list[int]:
    """Epochs of ``run_id`` with a complete checkpoint, ascending."""
    return checkpoints.list_epochs(checkpoints.run_dir(study.out_dir, run_id))


def load_rows(path: Path, fields: tuple[str, ...] = ("prompt", "completion")) -> list[dict]:
    """Prepared training rows (JSONL with at least string ``fields``)."""
    if not path.is_file():
        raise UserError(f"prepared training set not found: {path} (run `sftlab prepare` first)")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not all(isinstance(row.get(f), str) for f in fields):
                raise UserError(f"each row needs string {' and '.join(map(repr, fields))} fields",
                                where=f"{path}:{number}")
            rows.append(row)
    if not rows:
        raise UserError("the prepared training set is empty", where=str(path))
    return rows


def train_run(study, run, *, progress: bool = True) -> dict:
    """Train planned ``run`` of ``study`` with its method's module; return a summary.

    Resumes from the newest complete checkpoint; a no-op when already complete.
    """
    from sftlab.methods import module_for
    from sftlab.methods.links import Link, start_model
    from sftlab.study.plan import plan

    root = checkpoints.run_dir(study.out_dir, run.id)
    checkpoints.repair(root, run.checkpoints, run.unit)  # deleted by hand: train again
    done = checkpoints.read_done(root)
    if done is not None and all((root / f"{run.unit}-{n}").is_dir() for n in run.checkpoints):
        return {**done, "skipped": True}
    the_plan = plan(study)
    try:
        start = start_model(study, the_plan, the_plan.run_index.get(run.id, run))
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    link = Link(study=study, run=run, method=study.methods[run.method], start=start, root=root,
                progress=progress)
    return module_for(run.method_type).train(link)


def train_on_rows(model_path: str, rows: list[dict], cfg: TrainConfig, out_dir: Path | str, *,
                  progress: bool = False, record: dict | None = None,
                  callbacks: list | None = None) -> dict:
    """Train ``model_path`` on prompt/completion ``rows``; checkpoints go under ``out_dir``.

    ``out_dir`` plays the part of ``<output_dir>/ckpt/<run_id>``. Returns a summary:
    ``epochs_done``, ``checkpoints``, ``final_loss``, ``tokens_per_second``,
    ``disk_bytes``, ``resumed_from_epoch``, ``skipped``. ``callbacks`` are extra
    transformers ``TrainerCallback`` objects (progress reporting, tests).
    """
    root = Path(out_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    created = not root.exists()
    if main:
        root.mkdir(parents=True, exist_ok=True)
        checkpoints.clean_partial(root)
    try:
        return _train_or_resume(model_path, rows, cfg, root, main, progress, record, callbacks)
    except BaseException:
        if main and created and not checkpoints.list_epochs(root):
            shutil.rmtree(root, ignore_errors=True)  # failed before its first checkpoint
        raise


def _train_or_resume(model_path: str, rows: list[dict], cfg: TrainConfig, root: Path,
                     main: bool, progress: bool, record: dict | None,
                     callbacks: list | None) -> dict:
    if main:
        checkpoints.repair(root)
    if checkpoints.complete(root, cfg.epochs):
        return {**checkpoints.read_done(root), "skipped": True}
    last_epoch, resume_from = checkpoints.resume_point(root) if main else _peek_resume(root)
    if 0 < last_epoch < cfg.epochs and resume_from is None:
        log.warning("%s: epoch %d has no optimizer state; training from the start", root, last_epoch)
        last_epoch = 0
    if last_epoch >= cfg.epochs:  # killed between the last checkpoint and the done record
        summary = _summary_from_files(root, len(rows))
    else:
        if main:
            _truncate_log(root, resume_from)
        summary = _train(model_path, rows, cfg, root, resume_from, progress, record or {},
                         callbacks or [])
    summary["resumed_from_epoch"] = last_epoch
    if main:
        summary = checkpoints.mark_done(root, summary)
    return summary


def _summary_from_files(root: Path, examples: int) -> dict:
    epochs = checkpoints.list_epochs(root)
    path = root / LOG_NAME
    rows = [json.loads(x) for x in jsonio.lines(path.read_text(encoding="utf-8")) if x.strip()] if path.is_file() else []
    return {"epochs_done": epochs,
            "checkpoints": [str(checkpoints.epoch_dir(root, e)) for e in epochs],
            "final_loss": rows[-1]["loss"] if rows else None,
            "global_step": rows[-1]["step"] if rows else None,
            "tokens_per_second": None, "examples": examples}


def _truncate_log(root: Path, resume_from: Path | None) -> None:
    from sftlab.train.callbacks import truncate_log

    step = 0
    if resume_from is not None:
        step = json.loads((resume_from / "trainer_state.json").read_text())["global_step"]
    truncate_log(root / LOG_NAME, step)


def _peek_resume(root: Path) -> tuple[int, Path | None]:
    epochs = checkpoints.list_epochs(root)
    if not epochs:
        return 0, None
    newest = checkpoints.epoch_dir(root, epochs[-1])
    return epochs[-1], newest if checkpoints.is_resumable(newest) else None


def _train(model_path: str, rows: list[dict], cfg: TrainConfig, root: Path,
           resume_from: Path | None, progress: bool, record: dict, callbacks: list) -> dict:
    from sftlab.train.callbacks import EpochCheckpointCallback, TrainLogCallback
    from sftlab.train.trainer import build_trainer, quiet_libraries

    extra = {} if cfg.method_type == "full" else {checkpoints.BASE_RECORD: {
        "base_model": str(Path(model_path).resolve()) if Path(model_path).exists() else model_path,
        "method_type": cfg.method_type, **record}}
    saver = EpochCheckpointCallback(root, extra)
    logger = TrainLogCallback(root / LOG_NAME)
    with quiet_libraries():
        trainer = build_trainer(model_path, rows, cfg, root / checkpoints.STAGING,
                                callbacks=[saver, logger, *callbacks], progress=progress)
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        seconds = time.perf_counter() - start
    shutil.rmtree(root / checkpoints.STAGING, ignore_errors=True)
    epochs = checkpoints.list_epochs(root)
    return {
        "epochs_done": epochs,
        "checkpoints": [str(checkpoints.epoch_dir(root, e)) for e in epochs],
        "final_loss": logger.rows[-1]["loss"] if logger.rows else None,
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "tokens_per_second": round(logger.total_tokens / max(seconds, 1e-9), 2),
        "train_seconds": round(seconds, 3),
        "examples": len(rows),
    }
