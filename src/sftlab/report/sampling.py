"""The report section on repeated sampling: pass@k, cons@k and maj@k against k.

It reads each evaluation's predictions file: a sampled evaluation (``samples: n`` on a
benchmark, :mod:`sftlab.evaluate.sampling`) writes every item's per-k values
(``at_k``) and each sample's generated tokens. A point is the mean over items (an
item without samples counts 0) with a bootstrap 95% interval over items; its cost is
the expected generated tokens per item for k samples (k/n of the n samples' tokens)
and, where the evaluation record (``evals/<eval_id>.json``) has it, the seconds of
the evaluation scaled the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sftlab.evaluate.sampling import SAMPLED_METRIC
from sftlab.report import figures
from sftlab.report.document import MISSING, Cell, Figure, Section, Table, interval, num, slug
from sftlab.report.stats import bootstrap_counts

KINDS = ("pass", "cons", "maj")


def sampling_section(ctx) -> Section:
    sec = Section("sampling", "Repeated sampling: pass@k, cons@k, maj@k against k",
                  "For benchmarks evaluated with several samples per item: pass@k (unbiased "
                  "estimator), cons@k (majority over Math-Verify-equivalent answers) and maj@k "
                  "(majority over exact answer strings), each the mean over items with its "
                  "bootstrap 95% interval; cost = expected generated tokens per item (and the "
                  "evaluation's seconds) for k samples.")
    frame = sampling_table(ctx.view.rows, ctx.items, ctx.options)
    if frame.empty:
        sec.absent = "No benchmark was evaluated with several samples per item."
        return sec
    keys = ["model", "run", "benchmark"]
    wide = frame.pivot_table(index=keys + ["k"], columns="kind",
                             values=["value", "low", "high"], aggfunc="first")
    cost = frame.groupby(keys + ["k"])[["tokens", "seconds"]].first()
    rows = []
    for index in wide.index:
        row = dict(zip(keys + ["k"], map(str, index), strict=True))
        for kind in KINDS:
            if ("value", kind) in wide.columns and not pd.isna(wide.loc[index, ("value", kind)]):
                row[f"{kind}@k"] = Cell(num(wide.loc[index, ("value", kind)]),
                                        interval(wide.loc[index, ("low", kind)],
                                                 wide.loc[index, ("high", kind)]))
            else:
                row[f"{kind}@k"] = MISSING
        row["tokens / item"] = num(cost.loc[index, "tokens"], 0)
        row["seconds"] = num(cost.loc[index, "seconds"], 1)
        rows.append(row)
    body = pd.DataFrame(rows)
    sec.tables.append(Table("sampling", "Scores against k (value, 95% interval) and cost",
                            body, frame, labels=4))
    for bench, part in frame.groupby("benchmark", sort=False):
        name = slug(f"sampling_{bench}")
        _curve(part, ctx.figure_dir / name, str(bench))
        sec.figures.append(Figure(name, f"{bench}: pass@k, cons@k and maj@k against k."))
    return sec


def sampling_table(rows: pd.DataFrame, items, options) -> pd.DataFrame:
    """Long form: one row per (evaluation, metric kind, k) with value, interval, cost."""
    out = []
    root = options.predictions_root
    for _, r in rows.iterrows():
        preds = [p for p in items.rows(r["predictions_path"]) if "item_id" in p]
        if not any("at_k" in p for p in preds):
            continue
        run = "base" if r["is_base"] else f"{r['method']} {r['setting']} {r['datasets']} " \
                                          f"n={r['size']} e{r['epoch']}"
        tokens = [sum(s.get("tokens", 0) for s in p.get("samples", [])) for p in preds]
        n_samples = max((len(p.get("samples", [])) for p in preds), default=0)
        seconds = _seconds(root, r.get("eval_id"))
        names = {m for p in preds for m in p.get("at_k", {}) if SAMPLED_METRIC.fullmatch(m)}
        for name in names:
            kind, k = SAMPLED_METRIC.fullmatch(name).groups()
            values = np.array([p.get("at_k", {}).get(name, 0.0) for p in preds], dtype=float)
            low, high = _interval(values, options.resamples, options.seed)
            share = int(k) / n_samples if n_samples else float("nan")
            out.append({"model": r["model"], "run": run, "benchmark": r["column"],
                        "eval_id": r.get("eval_id"), "kind": kind, "k": int(k),
                        "value": 100 * values.mean(), "low": 100 * low, "high": 100 * high,
                        "items": len(values),
                        "tokens": (np.mean(tokens) * share) if any(tokens) else float("nan"),
                        "seconds": seconds * share if seconds is not None else float("nan")})
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    return frame.sort_values(["model", "run", "benchmark", "k", "kind"], ignore_index=True)


def _interval(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return float("nan"), float("nan")
    w = bootstrap_counts(len(values), resamples, np.random.default_rng(seed))
    means = w @ values / len(values)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _seconds(root: Path | None, eval_id) -> float | None:
    if root is None or not isinstance(eval_id, str):
        return None
    try:
        record = json.loads((Path(root) / "evals" / f"{eval_id}.json").read_text(encoding="utf-8"))
        return float(record["provenance"]["elapsed_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _curve(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    styles = {"pass": "-", "cons": "--", "maj": ":"}
    for i, ((model, run), part) in enumerate(frame.groupby(["model", "run"], sort=False)):
        color = figures.PALETTE[i % len(figures.PALETTE)]
        for kind, line in part.groupby("kind"):
            line = line.sort_values("k")
            ax.plot(line["k"], line["value"], styles.get(kind, "-"), color=color, marker="o",
                    label=figures.text(f"{model} {run} {kind}@k"))
            ax.fill_between(line["k"], line["low"], line["high"], color=color, alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("score (%)")
    ax.set_title(figures.text(title))
    ax.legend(fontsize=7)
    return figures.save(fig, stem)
