"""Per-item scores from predictions files, and paired comparisons over them."""

from __future__ import annotations

import json
import logging
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sftlab.report.stats import paired_bootstrap

log = logging.getLogger(__name__)


class ItemScores:
    """Reads predictions JSONL files once each: ``item_id -> score`` (NaN = missing)."""

    def __init__(self, root: Path | None = None):
        self.root = root
        self._scores: dict[str, pd.Series | None] = {}
        self._rows: dict[str, list[dict]] = {}
        self.missing_files: set[str] = set()

    def resolve(self, path: str) -> Path:
        """A relative path is looked up under ``root`` first, then the current directory."""
        p = Path(path)
        if p.is_absolute() or self.root is None or not (self.root / p).exists():
            return p
        return self.root / p

    def rows(self, path: str | None) -> list[dict]:
        """Every JSON row of a predictions file ([] when absent or unreadable); a suite
        view ``<file>#<category>`` gives the rows of that category."""
        if not isinstance(path, str) or not path:
            return []
        base, code = _suite_view(path)
        if code is not None:
            rows = self.rows(base)
            return rows if code == "AVR" else [r for r in rows if r.get("category") == code]
        if path not in self._rows:
            self._rows[path] = self._read(path)
        return self._rows[path]

    def scores(self, path: str | None) -> pd.Series | None:
        """Scores by item id, or None when the file is absent."""
        if not isinstance(path, str) or not path:
            return None
        if path not in self._scores:
            base, code = _suite_view(path)
            if code is not None:  # a suite's category: weighted so the mean is its value
                from sftlab.report.suites import weighted_scores

                weighted = weighted_scores(self.rows(base), code) if self.rows(base) else {}
                self._scores[path] = pd.Series(weighted, dtype=float) if weighted else None
                return self._scores[path]
            rows = self.rows(path)
            self._scores[path] = _score_series(rows) if rows else None
            self._rows.pop(path, None)  # keep memory for scores only
        return self._scores[path]

    def _read(self, path: str) -> list[dict]:
        file = self.resolve(path)
        try:
            with file.open(encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        except (OSError, json.JSONDecodeError) as err:
            log.warning("predictions %s unreadable: %s", file, err)
            self.missing_files.add(str(file))
            return []


def _suite_view(path: str) -> tuple[str, str | None]:
    """``("<file>", "NLI")`` for ``"<file>#NLI"`` (a suite's category or AVR), else (path, None)."""
    from sftlab.evaluate.llmjp.datasets import CATEGORIES

    base, sep, code = path.rpartition("#")
    return (base, code) if sep and code in (*CATEGORIES, "AVR") else (path, None)


def _score_series(rows: list[dict]) -> pd.Series:
    ids = [sys.intern(str(r.get("item_id"))) for r in rows]  # shared across files of a benchmark
    values = [_as_float(r.get("score")) for r in rows]
    series = pd.Series(values, index=ids, dtype=float)
    return series if series.index.is_unique else series.groupby(level=0).mean()


def _as_float(value) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


@dataclass(frozen=True)
class Pair:
    """One comparison: mean item score of ``a`` minus that of ``b`` on ``column``.

    ``a`` and ``b`` are predictions paths, or tuples of paths: a tuple stands for the
    item-wise mean of its files (a group of runs, e.g. every training set of a family).
    """

    column: str
    a: str | tuple[str, ...] | None
    b: str | tuple[str, ...] | None


def group_scores(items: ItemScores, paths: str | tuple[str, ...] | None) -> pd.Series | None:
    """Scores by item of one file, or the item-wise mean of a tuple of files (None when any
    file is absent; an item missing from any file is missing from the mean)."""
    if not isinstance(paths, tuple):
        return items.scores(paths)
    series = [items.scores(p) for p in paths]
    if not series or any(s is None for s in series):
        return None
    return pd.concat(series, axis=1).mean(axis=1, skipna=False)


def paired_intervals(
    pairs: list[Pair], items: ItemScores, *, scale: dict[str, float], resamples: int,
    seed: int, confidence: float,
) -> pd.DataFrame:
    """Bootstrap intervals (in value units) of each pair; columns ``low``, ``high``, ``items``."""
    out = pd.DataFrame({"low": np.nan, "high": np.nan, "items": 0}, index=range(len(pairs)))
    by_column: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_column.setdefault(pair.column, []).append(i)
    for column, idx in by_column.items():
        diffs, keep = _difference_matrix([pairs[i] for i in idx], items)
        if diffs is None:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(column.encode())])
        low, high, n = paired_bootstrap(diffs, resamples=resamples, rng=rng, confidence=confidence)
        rows = [idx[j] for j in keep]
        factor = scale.get(column, 100.0)
        out.loc[rows, "low"] = low * factor
        out.loc[rows, "high"] = high * factor
        out.loc[rows, "items"] = n
    return out


def _difference_matrix(pairs: list[Pair], items: ItemScores) -> tuple[np.ndarray | None, list[int]]:
    series = {p: group_scores(items, p) for pair in pairs for p in (pair.a, pair.b)}
    keep = [j for j, pr in enumerate(pairs) if series[pr.a] is not None and series[pr.b] is not None]
    if not keep:
        return None, []
    index = sorted(set().union(*(series[p].index for j in keep for p in (pairs[j].a, pairs[j].b))))
    aligned = {p: s.reindex(index).to_numpy(dtype=float) for p, s in series.items() if s is not None}
    diffs = np.stack([aligned[pairs[j].a] - aligned[pairs[j].b] for j in keep])
    return diffs, keep
