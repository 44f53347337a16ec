"""`sftlab results STUDY`: every score of a study as a flat table (text, JSON or CSV)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results_command(
        study_path: Path = typer.Argument(..., metavar="STUDY", help="Study YAML file."),
        as_json: bool = typer.Option(False, "--json", help="A JSON list of rows."),
        as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row."),
        smoke: bool = typer.Option(False, "--smoke", help="The results of the smoke run."),
        paths: bool = typer.Option(False, "--paths",
                                   help="Add eval_id and predictions_path (the per-item "
                                        "predictions file of each score) to --json / --csv."),
    ) -> None:
        """Print every stored score, one row each: run_id, model, method, setting, datasets
        ('+'-joined), size, epoch (0 = base model), task, shots, format, metric, value
        (percent; MT-Bench 1-10), stderr, n. A sampled evaluation (samples: n) is followed by
        its pass@K, cons@K and maj@K rows."""
        from sftlab import jsonio
        from sftlab.errors import UserError
        from sftlab.results import COLUMNS, TABLE_COLUMNS, results_rows
        from sftlab.study import load_study

        if as_json and as_csv:
            raise UserError("choose one of --json and --csv")
        columns = COLUMNS if paths else TABLE_COLUMNS
        rows = [{c: r[c] for c in columns}
                for r in results_rows(load_study(study_path), smoke=smoke, sampled=True)]
        if as_json:
            print(jsonio.dumps(rows, indent=1))
        elif as_csv:
            _print_csv(rows, columns)
        else:
            _print_table(rows)


def _print_csv(rows: list[dict], columns) -> None:
    import csv
    import sys

    writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from sftlab.results import TABLE_COLUMNS

    shown = TABLE_COLUMNS
    table = Table(title=f"{len(rows)} results")
    for col in shown:
        table.add_column(col, justify="right" if col in ("size", "epoch", "shots", "value",
                                                          "stderr", "n") else "left")
    for r in rows:
        table.add_row(*[_fmt(r[c]) for c in shown])
    Console(width=220).print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)
