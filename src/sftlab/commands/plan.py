"""`sftlab plan STUDY`: list every run of the grid and count the work."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_command(
        study_path: Path = typer.Argument(..., metavar="STUDY", help="Study YAML file."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        estimate: bool = typer.Option(False, "--estimate",
                                      help="Estimate compute-hours from the throughput measured "
                                           "in the study's store (by `sftlab run`)."),
    ) -> None:
        """List every run of a study and count runs, checkpoints and evaluations."""
        from sftlab.study import load_study, plan

        study = load_study(study_path)
        if estimate:
            _print_estimate(study, as_json)
            return
        the_plan = plan(study)
        counts = the_plan.counts()
        if as_json:
            runs = [
                {"id": r.id, "model": r.model, "method": r.method, "method_type": r.method_type,
                 "setting": r.setting, "datasets": list(r.datasets), "size": r.size,
                 "epochs": r.epochs, "data_key": r.data_key, "left_out": r.left_out,
                 "parent": r.parent, "chain": r.chain,
                 "checkpoints": [f"{r.unit}-{n}" for n in r.checkpoints]}
                for r in the_plan.runs
            ]
            print(json.dumps({"study": study.name, "runs": runs, "counts": counts}, indent=1))
            return
        _print_table(the_plan, counts)


def _print_table(the_plan, counts: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    study = the_plan.study
    table = Table(title=f"study {study.name}: {counts['runs']} runs", show_lines=False)
    chained = any(r.parent for r in the_plan.runs)
    columns = ("id", "model", "method", *(("parent",) if chained else ()), "setting", "datasets",
               "size", "epochs")
    for col in columns:
        table.add_column(col, justify="right" if col in ("size", "epochs") else "left")
    for r in the_plan.runs:
        names = {"single": r.datasets[0] if r.datasets else "-", "all": f"all ({len(r.datasets)})",
                 "leave_one_out": f"all - {r.left_out}"}[r.setting]
        method = r.chain if chained else r.method
        table.add_row(r.id, r.model, method, *((r.parent or "-",) if chained else ()), r.setting,
                      names, str(r.size) if r.size else "-", str(r.epochs))
    console = Console(width=200)
    console.print(table)
    n_models, n_data = len(study.models), len(study.datasets)
    per_cell = sum({"single": n_data, "all": 1, "leave_one_out": n_data}[s]
                   for s in study.grid.settings)
    shape = (f"runs: {counts['runs']} (method chains: "
             + ", ".join(sorted({r.chain for r in the_plan.runs})) + ")\n" if chained else
             f"runs: {counts['runs']} = {n_models} models x {len(study.grid.methods)} methods x "
             f"{len(study.grid.sizes)} sizes x {per_cell} data settings\n")
    console.print(
        shape +
        f"training sets: {counts['training_sets']}\n"
        f"checkpoints to evaluate: {counts['checkpoints']} (+ {counts['base_models']} base models)\n"
        f"evaluations: {counts['evaluations']} (checkpoint or base model x benchmark x shots)"
    )


def _print_estimate(study, as_json: bool) -> None:
    """Compute-hours per stage from measured throughput (``sftlab.status.estimate``)."""
    from sftlab.status import estimate

    info = estimate(study)
    if as_json:
        print(json.dumps(info, indent=1))
        return
    units = {"prepare": "examples", "train": "example-epochs", "evaluate": "evaluations"}
    if not info["measured"]:
        print(f"no throughput measured yet for study '{study.name}' (no finished work in "
              f"{info['store']}): run part of it first, e.g. `sftlab run STUDY --only "
              "model=<name>,size=<smallest>`, then ask again")
    for stage, s in info["stages"].items():
        rate = s["seconds_per_work"]
        if rate is None:
            print(f"{stage:9s} {s['work']:,.0f} {units[stage]}: not measured")
        else:
            print(f"{stage:9s} {s['work']:,.0f} {units[stage]} x {rate:.3g} s = "
                  f"{s['hours']:.2f} compute-hours ({s['remaining_hours']:.2f} left)")
    if info["hours"] is not None:
        print(f"total: {info['hours']:.2f} compute-hours, {info['remaining_hours']:.2f} left "
              "(sequential, on the executor that measured it)")
