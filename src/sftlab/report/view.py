"""The results table as the report sees it: validated, filtered, labelled.

A *benchmark column* is one task at one shot count (plus its format and metric when
a task has several), labelled like ``"gsm8k 4-shot"``. A *training-data label* names
what a run was trained on: the dataset for ``single``, ``all`` for the mixture of
every dataset and ``all - X`` for the leave-one-out mixture without ``X``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from sftlab.errors import UserError
from sftlab.evaluate.tasks.registry import scale_of, task_order
from sftlab.report.options import RESULT_COLUMNS, ReportOptions

log = logging.getLogger(__name__)

TASK_ORDER = tuple(task_order())
METHOD_TYPES = ("full", "lora", "dora")
RUN_KEYS = ["model", "method", "method_type", "size", "setting", "datasets", "data"]


@dataclass
class StudyView:
    """Filtered results with labels; ``final`` holds trained runs at the chosen epoch."""

    rows: pd.DataFrame  # every kept row (base + trained, all epochs), labelled
    base: pd.DataFrame  # base-model rows
    trained: pd.DataFrame  # trained rows, every epoch
    final: pd.DataFrame  # trained rows at the chosen epoch
    columns: list[str]  # benchmark columns in display order
    column_task: dict[str, str]
    column_scale: dict[str, float]  # value units per unit of item score (100 or 1)
    column_items: dict[str, int]  # most items any evaluation of the column scored
    epoch_label: str
    warnings: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted(set(self.rows["model"]))

    def items_in(self, columns: list[str]) -> int:
        """Items behind a set of columns (each counted once)."""
        return int(sum(self.column_items.get(c, 0) for c in set(columns)))


def build_view(results: pd.DataFrame, options: ReportOptions) -> StudyView:
    """Validate ``results``, apply the filters and label every row."""
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise UserError(f"results lack column(s): {', '.join(missing)}", where="report")
    if results.empty:
        raise UserError("the study has no results yet; run `sftlab run STUDY` first",
                        where="report")
    rows = _normalise(results, options)
    rows = _filter(rows, options)
    warnings = []
    dupes = rows.duplicated(["run_id", "epoch", "column"], keep="last")
    if dupes.any():
        warnings.append(f"{int(dupes.sum())} duplicated result row(s): the last one is used")
        rows = rows[~dupes]
    base = rows[rows["is_base"]].copy()
    trained = rows[~rows["is_base"]].copy()
    final, epoch_label = _select_epoch(trained, options.epoch)
    columns = _ordered_columns(rows)
    first = rows.drop_duplicates("column").set_index("column")
    return StudyView(
        rows=rows, base=base, trained=trained, final=final, columns=columns,
        column_task=first["task"].to_dict(),
        column_scale={c: scale_of(first.loc[c, "task"]) for c in columns},
        column_items=rows.groupby("column")["n"].max().fillna(0).astype(int).to_dict(),
        epoch_label=epoch_label, warnings=warnings,
    )


def _normalise(results: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    rows = results.copy()
    rows["datasets"] = rows["datasets"].fillna("").astype(str)
    rows["model"] = rows["model"].astype(str)
    rows["method"] = rows["method"].astype(str)
    rows["task"] = rows["task"].astype(str)
    rows["format"] = rows["format"].fillna("").astype(str)
    rows["metric"] = rows["metric"].fillna("").astype(str)
    for col in ("size", "epoch", "shots"):
        rows[col] = pd.to_numeric(rows[col], errors="coerce").fillna(0).astype(int)
    for col in ("value", "stderr", "n"):
        rows[col] = pd.to_numeric(rows[col], errors="coerce")
    rows["is_base"] = (rows["method"] == "base") | rows["run_id"].astype(str).str.startswith("base-")
    rows.loc[rows["is_base"], ["method", "setting", "datasets"]] = ["base", "base", ""]
    rows.loc[rows["is_base"], ["size", "epoch"]] = 0
    rows["method_type"] = [
        "base" if b else options.method_types.get(m, m) for m, b in zip(rows["method"], rows["is_base"], strict=True)
    ]
    rows["family"] = [options.families.get(m, m) for m in rows["model"]]
    rows["column"] = _column_labels(rows)
    rows["data"] = _data_labels(rows)
    return rows


def _column_labels(rows: pd.DataFrame) -> list[str]:
    formats = rows.groupby("task")["format"].nunique().to_dict()
    metrics = rows.groupby("task")["metric"].nunique().to_dict()
    labels = []
    for task, shots, fmt, metric in zip(rows["task"], rows["shots"], rows["format"], rows["metric"], strict=True):
        label = f"{task} {shots}-shot"
        if formats[task] > 1:
            label += f" [{fmt}]"
        if metrics[task] > 1:
            label += f" ({metric})"
        labels.append(label)
    return labels


def _data_labels(rows: pd.DataFrame) -> list[str]:
    universe: set[str] = set()
    for setting, names in zip(rows["setting"], rows["datasets"], strict=True):
        if setting in ("single", "all") and names:
            universe.update(names.split("+"))
    labels = []
    for setting, names in zip(rows["setting"], rows["datasets"], strict=True):
        if setting == "all":
            labels.append("all")
        elif setting == "leave_one_out":
            out = sorted(universe - set(names.split("+")))
            labels.append("all - " + "+".join(out) if out else names)
        elif setting == "base":
            labels.append("(base)")
        else:
            labels.append(names)
    return labels


def _filter(rows: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    problems = []
    for key, wanted, col in (("model", options.models, "model"), ("method", options.methods, "method"),
                             ("size", options.sizes, "size")):
        known = sorted(set(rows.loc[~rows["is_base"], col]) | (set(rows[col]) if key == "model" else set()))
        unknown = [w for w in wanted if w not in known]
        if unknown:
            problems.append(f"--{key}: no results for {', '.join(map(str, unknown))} "
                            f"(known: {', '.join(map(str, known)) or 'none'})")
    if problems:
        raise UserError(problems, where="report")
    keep = pd.Series(True, index=rows.index)
    if options.models:
        keep &= rows["model"].isin(options.models)
    if options.methods:
        keep &= rows["is_base"] | rows["method"].isin(options.methods)
    if options.sizes:
        keep &= rows["is_base"] | rows["size"].isin(options.sizes)
    return rows[keep].copy()


def _select_epoch(trained: pd.DataFrame, epoch: str | int) -> tuple[pd.DataFrame, str]:
    if trained.empty:
        return trained.copy(), "final epoch"
    if epoch == "final":
        last = trained.groupby("run_id")["epoch"].transform("max")
        return trained[trained["epoch"] == last].copy(), "final epoch"
    epoch = int(epoch)
    chosen = trained[trained["epoch"] == epoch].copy()
    if chosen.empty:
        known = sorted(set(trained["epoch"]))
        raise UserError(f"--epoch: no results at epoch {epoch} (evaluated epochs: "
                        f"{', '.join(map(str, known))})", where="report")
    return chosen, f"epoch {epoch}"


def _ordered_columns(rows: pd.DataFrame) -> list[str]:
    first = rows.drop_duplicates("column")

    def key(row) -> tuple:
        rank = TASK_ORDER.index(row.task) if row.task in TASK_ORDER else len(TASK_ORDER)
        return (rank, row.task, row.format, row.metric, row.shots)

    return [r.column for r in sorted(first.itertuples(), key=key)]
