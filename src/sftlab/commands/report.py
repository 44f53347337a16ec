"""`sftlab report STUDY`: the study's tables and figures (HTML or Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        study_path: Path = typer.Argument(..., metavar="STUDY", help="Study YAML file."),
        out: Path | None = typer.Option(None, "--out", help="Report folder (default: <output_dir>/report)."),
        fmt: str = typer.Option("html", "--format", help="html (index.html) or md (index.md)."),
        model: list[str] = typer.Option([], "--model", help="Only this base model (repeatable)."),
        method: list[str] = typer.Option([], "--method", help="Only this method (repeatable)."),
        size: list[int] = typer.Option([], "--size", help="Only this training-set size (repeatable)."),
        epoch: str = typer.Option("final", "--epoch", help="'final' (each run's last epoch) or a number."),
        resamples: int | None = typer.Option(None, "--resamples", min=1,
                                             help="Bootstrap resamples (default: the study's, 1000)."),
        smoke: bool = typer.Option(False, "--smoke", help="Report the smoke run (<output_dir>/smoke)."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Write the report: deltas with bootstrap intervals, epochs, families, data x benchmark,
        benchmark correlations, leave-one-out, shots, LoRA vs full, sizes, categories."""
        from sftlab.errors import UserError
        from sftlab.report import ReportOptions, build_report
        from sftlab.study import load_study

        if fmt not in ("html", "md"):
            raise UserError(f"--format: unknown format '{fmt}' (expected html or md)")
        if epoch != "final" and not epoch.isdigit():
            raise UserError(f"--epoch: expected 'final' or a number, got '{epoch}'")
        study = load_study(study_path)
        root = study.out_dir / "smoke" if smoke else study.out_dir
        options = ReportOptions(
            models=tuple(model), methods=tuple(method), sizes=tuple(size),
            epoch="final" if epoch == "final" else int(epoch), format=fmt,  # type: ignore[arg-type]
            resamples=resamples or study.report.bootstrap_resamples, seed=study.seed,
            categories={k: list(v) for k, v in study.report.categories.items()},
            study_name=study.name + (" (smoke)" if smoke else ""),
            method_types=_method_types(study), predictions_root=root,
            families={m.name: m.family or m.name for m in study.models},
            notes=_lock_notes(study.out_dir),
        )
        summary = build_report(_load_results(study, smoke), out or root / "report", options=options)
        if as_json:
            print(json.dumps(summary.to_dict(), indent=1))
            return
        shown = sum(s.present for s in summary.sections)
        print(f"report: {summary.index} ({shown}/{len(summary.sections)} sections, "
              f"{len(summary.figures)} figure files, {len(summary.tables)} table files)")
        for s in summary.sections:
            if not s.present:
                print(f"  not shown: {s.title}: {s.reason}")
        for w in summary.warnings:
            print(f"  warning: {w}")


def _load_results(study, smoke: bool):
    """The study's results as a DataFrame (from the orchestration's store)."""
    from sftlab.results import load_results

    return load_results(study, smoke=smoke)


def _method_types(study) -> dict[str, str]:
    """Method label -> what its checkpoints are: a method's name, or a chain's label
    (``cpt>upscale>sft``, as results are labelled), maps to the last link's weights kind."""
    chains = {}
    for name in study.methods:
        link, label = name, name
        while study.methods[link].init is not None:
            link = study.methods[link].init
            label = f"{link}>{label}"
        chains[label] = study.methods[name].weights
    return {**{k: study.method_type(k) for k in study.methods}, **chains}


def _lock_notes(out_dir) -> tuple[str, ...]:
    """The report's note on versions that differ from the lock file (none: nothing)."""
    from sftlab.lockfile import study_version_mismatches

    diff = study_version_mismatches(out_dir)
    return (f"Library versions differ from the lock file: {'; '.join(diff)}.",) if diff else ()
