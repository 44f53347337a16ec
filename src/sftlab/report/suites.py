"""Suites in the report: an ``llm-jp-eval`` result becomes one column per category.

A suite evaluation is stored as one result row (``metric`` ``AVR``) whose predictions
file holds every dataset's items, each with its ``dataset`` and ``category``.
:func:`expand_suites` adds one row per category (``metric`` = the category code), its
value computed from those items as llm-jp-eval does (the mean of the category's
dataset means), and points every suite row at a weighted view of the file
(``<path>#<code>``, ``<path>#AVR``) in which each item's score is scaled so that the
plain mean over the items equals the category's mean of dataset means (AVR: the mean
of category means). The paired bootstrap over items then resamples exactly that
statistic. A category whose datasets have no items in a file is missing, never 0.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from sftlab.evaluate.tasks.registry import TASKS

FRAGMENT = "#"


def suite_tasks() -> set[str]:
    return {n for n, s in TASKS.items() if s.aggregation == "suite"}


def weighted_scores(rows: list[dict], code: str) -> dict[str, float]:
    """item id -> score x weight, so that the plain mean is the category (or AVR) value
    as a fraction; items of datasets outside ``code`` are left out."""
    by_cat: dict[str, dict[str, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cat, ds, score = r.get("category"), r.get("dataset"), r.get("score")
        if cat and ds and isinstance(score, (int, float)) and not math.isnan(score):
            by_cat[cat][ds].append((str(r["item_id"]), float(score)))
    cats = [code] if code != "AVR" else sorted(by_cat)
    cats = [c for c in cats if c in by_cat]
    total = sum(len(items) for c in cats for items in by_cat[c].values())
    out = {}
    for c in cats:
        for items in by_cat[c].values():
            weight = total / (len(items) * len(by_cat[c]) * len(cats))
            out.update({i: s * weight for i, s in items})
    return out


def expand_suites(results: pd.DataFrame, read_rows) -> pd.DataFrame:
    """``results`` with one row per category added for every suite row (``read_rows``:
    path -> its predictions rows)."""
    if not {"task", "predictions_path", "eval_id"} <= set(results.columns):
        return results  # build_view reports the missing columns
    suites = results[results["task"].isin(suite_tasks())]
    if suites.empty:
        return results
    added = []
    for _, row in suites.iterrows():
        path = row["predictions_path"]
        items = read_rows(path) if isinstance(path, str) and path else []
        codes = sorted({r.get("category") for r in items if r.get("category")})
        for code in codes:
            scores = weighted_scores(items, code)
            if not scores:
                continue
            added.append({**row.to_dict(), "metric": code,
                          "value": 100.0 * sum(scores.values()) / len(scores),
                          "stderr": math.nan, "n": len(scores),
                          "eval_id": f"{row['eval_id']}{FRAGMENT}{code}",
                          "predictions_path": f"{path}{FRAGMENT}{code}"})
    out = results.copy()
    is_suite = out["task"].isin(suite_tasks()) & out["predictions_path"].notna()
    out.loc[is_suite, "predictions_path"] = out.loc[is_suite, "predictions_path"] + f"{FRAGMENT}AVR"
    return pd.concat([out, pd.DataFrame(added, columns=out.columns)], ignore_index=True) \
        if added else out


def suite_section(ctx):
    """The llm-jp-eval table as LLM-jp publishes it: one row per model (base models and
    fine-tuned runs at the chosen epoch), AVR then the nine categories."""
    from sftlab.evaluate.llmjp.datasets import CATEGORIES
    from sftlab.report.document import MISSING, Section, Table, num

    sec = Section("llm_jp_eval", "llm-jp-eval: AVR and categories",
                  "llm-jp-eval v1.3 categories (mean of each category's dataset scores) and AVR "
                  "(mean of the categories with data; a category without data is missing, not 0). "
                  "Deltas against the base model, with paired bootstrap intervals over items, "
                  "are the llm-jp-eval columns of the first section.")
    frame = pd.concat([ctx.view.base, ctx.view.final], ignore_index=True)
    frame = frame[frame["task"].isin(suite_tasks())]
    if frame.empty:
        sec.absent = "No llm-jp-eval results in the selection."
        return sec
    metrics = ["AVR", *CATEGORIES]
    rows = []
    keys = ["model", "method", "data", "size", "shots"]
    for key, group in frame.groupby(keys, sort=True):
        by_metric = dict(zip(group["metric"], group["value"], strict=False))
        entry = dict(zip(keys, key, strict=True))
        entry |= {m: num(by_metric[m]) if m in by_metric else MISSING for m in metrics}
        rows.append(entry)
    display = pd.DataFrame(rows)
    export = frame[keys + ["metric", "value"]].reset_index(drop=True)
    sec.tables.append(Table("llm_jp_eval", "llm-jp-eval: AVR and categories", display, export,
                            labels=len(keys)))
    return sec
