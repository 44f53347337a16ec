"""``build_report``: results DataFrame in, report folder out.

The folder is built under a temporary name beside ``out_dir`` and renamed into place,
so a report is either the previous one or the complete new one.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from sftlab.errors import UserError
from sftlab.report import html, markdown, sections, tables
from sftlab.report.configs import configs_section
from sftlab.report.document import Section
from sftlab.report.examples import examples_section
from sftlab.report.items import ItemScores
from sftlab.report.options import ReportOptions, ReportSummary, SectionStatus
from sftlab.report.rl_weights import rl_section
from sftlab.report.sampling import sampling_section
from sftlab.report.suites import expand_suites, suite_section, suite_tasks
from sftlab.report.synth_funnel import synth_funnel_section
from sftlab.report.view import StudyView, build_view

log = logging.getLogger(__name__)

MARKER = ".sftlab-report"  # written into every report folder; only such a folder is replaced

BUILDERS = (
    sections.deltas_section, sections.epochs_section, sections.families_section,
    sections.zscores_section, sections.correlation_section, sections.loo_section,
    sections.shots_section, sections.lora_section, sections.sizes_section,
    sections.categories_section, synth_funnel_section, sampling_section, rl_section,
)


def build_report(results: pd.DataFrame, out_dir: Path, *, options: ReportOptions | None = None
                 ) -> ReportSummary:
    """Write the study report (index.html or index.md, figures/, tables/) to ``out_dir``."""
    options = options or ReportOptions()
    out_dir = Path(out_dir)
    _check_target(out_dir)
    items = ItemScores(options.predictions_root)
    view = build_view(expand_suites(results, items.rows), options)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "figures").mkdir(parents=True)
    (work / "tables").mkdir()
    (work / MARKER).write_text("a report written by `sftlab report`; the next one replaces "
                               "this folder\n", encoding="utf-8")
    try:
        secs = _sections(view, items, options, work / "figures")
        table_files = _write_tables(secs, work / "tables")
        index = _write_index(view, options, secs, work)
        _swap(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    warnings = view.warnings + [f"predictions file unreadable: {p}" for p in sorted(items.missing_files)]
    warnings += list(options.notes)
    for w in warnings:
        log.warning(w)
    return ReportSummary(
        out_dir=out_dir, index=out_dir / index.name,
        sections=[SectionStatus(s.key, s.title, not s.absent, s.absent) for s in secs],
        figures=sorted((out_dir / "figures").glob("*.*")),
        tables=[out_dir / "tables" / p.name for p in table_files],
        n_models=len(view.models), n_runs=int(view.final["run_id"].nunique()),
        n_columns=len(view.columns), warnings=warnings,
    )


def _sections(view: StudyView, items: ItemScores, options: ReportOptions, figure_dir: Path
              ) -> list[Section]:
    deltas = tables.delta_table(view, items, options) if not view.final.empty else pd.DataFrame()
    ctx = sections.Context(view, items, options, figure_dir, deltas)
    secs = [build(ctx) for build in BUILDERS]
    if view.rows["task"].isin(suite_tasks()).any():  # only studies that ran a suite
        secs.append(suite_section(ctx))
    secs.append(configs_section(ctx))
    secs.append(examples_section(view, deltas, items, options.examples))
    return secs


def _write_tables(secs: list[Section], folder: Path) -> list[Path]:
    written = []
    for sec in secs:
        for table in sec.tables:
            csv, md = folder / f"{table.name}.csv", folder / f"{table.name}.md"
            table.export.to_csv(csv, index=False)
            md.write_text(f"# {markdown.esc(table.caption)}\n\n" + markdown.table_md(table.display),
                          encoding="utf-8")
            written += [csv, md]
    return written


def _write_index(view: StudyView, options: ReportOptions, secs: list[Section], folder: Path) -> Path:
    title = f"sftlab report: {options.study_name}"
    selection = ", ".join(
        f"{k}: {', '.join(map(str, v)) if v else 'all'}"
        for k, v in (("models", options.models), ("methods", options.methods), ("sizes", options.sizes)))
    meta = [
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from {len(view.models)} base model(s), "
        f"{view.final['run_id'].nunique()} fine-tuned run(s) and {len(view.columns)} benchmark column(s).",
        f"Selection: {selection}; {view.epoch_label}.",
        f"Intervals: paired bootstrap over items, {options.resamples:,} resamples, seed {options.seed}, "
        f"{options.confidence:.0%} percentile intervals.",
        *options.notes,
    ]
    if options.format == "md":
        index = folder / "index.md"
        index.write_text(markdown.render(title, meta, secs), encoding="utf-8")
    else:
        index = folder / "index.html"
        index.write_text(html.render(title, meta, secs), encoding="utf-8")
    return index


def _check_target(out_dir: Path) -> None:
    """Only an empty folder or one sftlab marked as its report may be replaced."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MARKER).is_file()):
        raise UserError(f"{out_dir} exists and is not a report folder written by sftlab (no "
                        f"{MARKER} file in it); choose another --out or move it away",
                        where="report")


def _swap(work: Path, out_dir: Path) -> None:
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    shutil.rmtree(old, ignore_errors=True)
