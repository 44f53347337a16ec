"""`sftlab status STUDY`: where a study stands, read from its store alone."""

from __future__ import annotations

from pathlib import Path

import typer

from sftlab import jsonio


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status_command(
        study_path: Path = typer.Argument(..., metavar="STUDY", help="Study YAML file."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        smoke: bool = typer.Option(False, "--smoke", help="The status of the smoke run."),
        all_runs: bool = typer.Option(False, "--all", help="List every run (default: 40)."),
    ) -> None:
        """Counts by stage and state, a row per run, the error of each failure, and an
        ETA from measured throughput."""
        from sftlab.status import study_status
        from sftlab.study import load_study

        info = study_status(load_study(study_path), smoke=smoke)
        if as_json:
            print(jsonio.dumps(info))
        else:
            _print_status(info, all_runs)


def _print_status(info: dict, all_runs: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from sftlab.status import format_seconds

    console = Console(width=200)
    driver = info["driver"]
    console.print(f"study {info['study']}  store {info['store']}")
    console.print(f"driver: {driver['holder']}" if driver["alive"] else "driver: not running")
    counts = Table(title="work by stage")
    for col in ("stage", "pending", "running", "done", "failed", "throughput", "eta"):
        counts.add_column(col, justify="left" if col == "stage" else "right")
    for stage, c in info["counts"].items():
        tp = info["throughput"].get(stage, {})
        rate = tp.get("seconds_per_work")
        unit = {"train": "s/example-epoch", "evaluate": "s/eval", "prepare": "s/example"}[stage]
        counts.add_row(stage, *(str(c[s]) for s in ("pending", "running", "done", "failed")),
                       f"{rate:.3g} {unit}" if rate else "-",
                       format_seconds(tp.get("eta_seconds")))
    console.print(counts)
    console.print(f"ETA: {format_seconds(info['eta_seconds'])}"
                  + ("" if info["eta_seconds"] is not None or not info["remaining"]
                     else " (no throughput measured yet)"))
    _print_runs(console, info["runs"], all_runs)
    for f in info["failures"]:
        console.print(f"[red]failed[/red] {f['stage']} {f['label']} ({f['id']}, "
                      f"attempt {f['attempts']}): {f['error']}")
        if f.get("log_tail"):
            console.print("   " + "\n   ".join(f["log_tail"].strip().splitlines()[-6:]),
                          markup=False, highlight=False)


def _print_runs(console, runs: list[dict], all_runs: bool) -> None:
    from rich.table import Table

    order = sorted(runs, key=lambda r: r["train"] == "done" and r["evals_done"] == r[
        "evals_total"])
    shown = order if all_runs else order[:40]
    table = Table(title=f"runs ({len(shown)} of {len(runs)})")
    for col in ("run_id", "model", "method", "setting", "datasets", "size", "train", "evals"):
        table.add_column(col, justify="right" if col in ("size", "evals") else "left")
    for r in shown:
        evals = f"{r['evals_done']}/{r['evals_total']}" + (
            f" ({r['evals_failed']} failed)" if r["evals_failed"] else "")
        table.add_row(r["run_id"], r["model"], r["method"], r["setting"], r["datasets"],
                      str(r["size"]), r["train"], evals)
    console.print(table)
