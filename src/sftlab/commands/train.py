"""`sftlab train STUDY --run RUN_ID | --all`: train planned runs on their prepared sets.

A run's needs come first: its training set is prepared when missing (content-addressed,
so free when cached) and the links it starts from (``init:``) are trained before it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from sftlab.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        study_path: Path = typer.Argument(..., metavar="STUDY", help="Study YAML file."),
        run_ids: list[str] = typer.Option(
            None, "--run", help="Run id (or a unique prefix of 4+ characters) from `sftlab plan`; "
            "repeat for several."),
        train_all: bool = typer.Option(False, "--all", help="Train every run not yet trained."),
        nproc: int = typer.Option(
            1, "--nproc", min=1, help="Data-parallel processes per run (torchrun; gloo on CPU)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary per run."),
    ) -> None:
        """Train runs (any method: SFT, cpt, upscale), a checkpoint per epoch; resumes after a
        kill. Prepares a missing training set and trains a run's parent links first."""
        from sftlab.store import DriverLock
        from sftlab.study import load_study, plan

        study = load_study(study_path)
        the_plan = plan(study)
        if bool(run_ids) == train_all:
            raise UserError("give --run RUN_ID (one or more) or --all", where="sftlab train")
        asked = the_plan.runs if train_all else [the_plan.run(r) for r in run_ids]
        runs = list(dict.fromkeys(a for r in asked for a in [*the_plan.ancestors(r), r]))
        with DriverLock(study.out_dir, study.name, command="train"):  # never beside `run`
            _prepare_missing(study, runs)
            _train_all(study, study_path, runs, nproc, as_json)


def _train_all(study, study_path: Path, runs: list, nproc: int, as_json: bool) -> None:
    for run in runs:
        summary = _train_one(study, study_path, run, nproc, progress=not as_json)
        if as_json:
            print(json.dumps({"run_id": run.id, **summary}))
        else:
            _print_summary(run, summary)


def _prepare_missing(study, runs) -> None:
    """Prepare the study's training sets when one that ``runs`` need is not on disk."""
    data = Path(study.out_dir) / "data"
    if any(r.data_key and not (data / f"{r.data_key}.jsonl").is_file() for r in runs):
        from sftlab.data.prepare import prepare

        prepare(study, progress=False)


def _train_one(study, study_path: Path, run, nproc: int, *, progress: bool) -> dict:
    from sftlab.train import train_run
    from sftlab.train.checkpoints import read_done, run_dir

    if nproc == 1:
        return train_run(study, run, progress=progress)
    from sftlab.train.launch import run_distributed

    code = run_distributed(nproc, [str(study_path), run.id])
    if code != 0:
        raise UserError(f"distributed training of run {run.id} failed (exit code {code})")
    return read_done(run_dir(study.out_dir, run.id)) or {}


def _print_summary(run, summary: dict) -> None:
    if summary.get("skipped"):
        print(f"run {run.id}: already trained ({len(summary.get('epochs_done', []))} epochs)")
        return
    mib = summary.get("disk_bytes", 0) / 2**20
    loss, speed = summary.get("final_loss"), summary.get("tokens_per_second")
    epochs = summary.get("epochs_done") or []
    resumed = summary.get("resumed_from_epoch") or 0
    parts = [f"epochs {', '.join(map(str, epochs))}" + (f" (resumed after epoch {resumed})"
                                                        if resumed else ""),
             f"final loss {loss:.4f}" if loss is not None else "no loss logged",
             f"{speed:,.0f} tokens/s" if speed else None,
             f"{mib:.1f} MiB on disk"]
    print(f"run {run.id} ({run.model}, {run.method}, {run.setting}, size {run.size}): "
          + ", ".join(p for p in parts if p), file=sys.stdout)
    if epochs:
        print(f"  checkpoints: {Path(summary['checkpoints'][-1]).parent}/epoch-<n>", file=sys.stdout)
