"""What a report is asked to show (:class:`ReportOptions`) and what it wrote (:class:`ReportSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sftlab.evaluate.tasks.registry import default_categories, rating_tasks

DEFAULT_CATEGORIES: dict[str, list[str]] = default_categories()

# Tasks whose value is not a percentage (MT-Bench ratings are on a 1-10 scale).
RATING_TASKS = rating_tasks()

RESULT_COLUMNS = (
    "run_id", "model", "method", "setting", "datasets", "size", "epoch", "task", "shots",
    "format", "metric", "value", "stderr", "n", "eval_id", "predictions_path",
)


@dataclass(frozen=True)
class ReportOptions:
    """Filters and settings of one report.

    Empty filter tuples mean "everything". ``epoch`` is ``"final"`` (each run's last
    evaluated epoch) or an epoch number. ``families`` maps model names to a family
    label (default: each base model is its own family); ``method_types`` maps method
    names to full / lora / dora (default: the name itself).
    """

    models: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    epoch: Literal["final"] | int = "final"
    format: Literal["html", "md"] = "html"
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    categories: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_CATEGORIES))
    study_name: str = "study"
    families: dict[str, str] = field(default_factory=dict)
    method_types: dict[str, str] = field(default_factory=dict)
    predictions_root: Path | None = None  # relative predictions paths are resolved here
    examples: int = 1  # example outputs shown per benchmark column (0 = none)
    notes: tuple[str, ...] = ()  # shown under the title and returned as warnings (lock mismatches)


@dataclass
class SectionStatus:
    """One section of a written report."""

    key: str
    title: str
    present: bool
    reason: str = ""


@dataclass
class ReportSummary:
    """What :func:`sftlab.report.build_report` wrote."""

    out_dir: Path
    index: Path
    sections: list[SectionStatus]
    figures: list[Path]
    tables: list[Path]
    n_models: int
    n_runs: int
    n_columns: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-friendly view (for ``sftlab report --json``)."""
        return {
            "out_dir": str(self.out_dir),
            "index": str(self.index),
            "sections": [vars(s) for s in self.sections],
            "figures": [str(p) for p in self.figures],
            "tables": [str(p) for p in self.tables],
            "n_models": self.n_models,
            "n_runs": self.n_runs,
            "n_columns": self.n_columns,
            "warnings": self.warnings,
        }
