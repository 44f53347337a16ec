"""The report's sections: each turns the long tables of ``tables.py`` into display
tables and figures, says what data it rests on, and says so when its data is absent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sftlab.evaluate.tasks.registry import TASKS
from sftlab.report import figures, tables
from sftlab.report.document import (
    MISSING,
    Cell,
    Figure,
    Section,
    Table,
    delta_cell,
    interval,
    is_missing,
    num,
    plural,
    signed,
    slug,
)
from sftlab.report.items import ItemScores
from sftlab.report.options import ReportOptions
from sftlab.report.stats import cluster_order, cluster_tree
from sftlab.report.view import StudyView


@dataclass
class Context:
    """What every section builder needs."""

    view: StudyView
    items: ItemScores
    options: ReportOptions
    figure_dir: Path
    deltas: pd.DataFrame


def basis(view: StudyView, frame: pd.DataFrame, columns=None) -> str:
    """'Rests on N base models, M runs, K columns and I items per evaluated model.'"""
    columns = sorted(set(frame["column"])) if columns is None else list(columns)
    models = frame["model"].nunique() if "model" in frame else 0
    trained = frame[frame["method"] != "base"] if "method" in frame else frame
    runs = trained["run_id"].nunique() if "run_id" in frame else 0
    parts = [plural(int(models), "base model")]
    if runs:
        parts.append(plural(int(runs), "fine-tuned run"))
    parts.append(plural(len(columns), "benchmark column"))
    return (f"Rests on {', '.join(parts)} and {view.items_in(columns):,} items per evaluated "
            f"model ({view.epoch_label}).")


def digits(view: StudyView, column: str) -> int:
    """Decimals for a column's differences: 2 on rating scales (MT-Bench), else 1."""
    return 2 if view.column_scale.get(column) == 1.0 else 1


def wide(frame: pd.DataFrame, rows: list[str], view: StudyView, cell, labels: dict | None = None
         ) -> pd.DataFrame:
    """Pivot a long frame to rows x benchmark columns, formatting each cell with ``cell(row)``."""
    columns = [c for c in view.columns if c in set(frame["column"])]
    out = {}
    for key, group in sorted(frame.groupby(rows, sort=False), key=lambda kv: _row_order(kv[0])):
        key = key if isinstance(key, tuple) else (key,)
        by_col = {r["column"]: r for _, r in group.iterrows()}
        entry = {(labels or {}).get(k, k): v for k, v in zip(rows, key, strict=True)}
        for c in columns:
            entry[c] = cell(by_col[c]) if c in by_col else Cell(MISSING, marks=("missing",))
        out[key] = entry
    return pd.DataFrame(list(out.values()))


def _row_order(key) -> tuple:
    """Single datasets first, then `all`, then leave-one-out mixtures."""
    key = key if isinstance(key, tuple) else (key,)
    rank = tuple(1 if k == "all" else 2 if str(k).startswith("all - ") else 0 for k in key)
    return tuple(zip(rank, key, strict=True))


def deltas_section(ctx: Context) -> Section:
    sec = Section("deltas", "Deltas vs the base model",
                  "Score minus the base model's score per benchmark column and training set. "
                  "Below each delta: its paired bootstrap 95% interval over items; * marks an "
                  "interval that excludes 0. Green: best in its column, red: worst (per block).")
    frame = ctx.deltas
    if frame.empty:
        sec.absent = "No fine-tuned runs in the selection."
        return sec
    sec.basis = basis(ctx.view, frame)
    for (model, method, size), block in frame.groupby(tables.BLOCK, sort=True):
        body = wide(block, ["data"], ctx.view, lambda r: delta_cell(
            r["delta"], r["low"], r["high"], bool(r["significant"]), (r["mark"],) if r["mark"] else (),
            digits(ctx.view, r["column"])), labels={"data": "training data"})
        base = {"training data": "base score"}
        for c in body.columns[1:]:
            value = ctx.view.base[(ctx.view.base["model"] == model) & (ctx.view.base["column"] == c)]["value"]
            base[c] = Cell(num(value.iloc[0]) if len(value) else MISSING, marks=("base",))
        body = pd.concat([pd.DataFrame([base]), body], ignore_index=True)
        name = slug(f"deltas_{model}_{method}_{size}")
        export = block.drop(columns=["predictions_path", "base_path"])
        sec.tables.append(Table(name, f"{model}, {method}, {size:,} examples", body, export))
    missing_base = frame["base"].isna().sum()
    if missing_base:
        sec.notes.append(f"{missing_base} cell(s) have no base-model score and show as {MISSING}.")
    corpus = [c for c in ctx.view.columns if c in set(frame["column"])
              and TASKS.get(ctx.view.column_task[c]) is not None
              and TASKS[ctx.view.column_task[c]].aggregation == "corpus"]
    if corpus:
        sec.notes.append("No item bootstrap for corpus-level metrics (a statistic of the whole "
                         f"set, not a mean of item scores): {', '.join(corpus)}.")
    return sec


def epochs_section(ctx: Context) -> Section:
    sec = Section("epochs", "Score by epoch",
                  "Score of each training set after every epoch; epoch 0 is the base model "
                  "(dashed). All evaluated epochs are shown whatever --epoch says.")
    frame = tables.epoch_table(ctx.view)
    if frame.empty or frame["epoch"].nunique() < 2:
        sec.absent = "No run was evaluated at more than one epoch."
        return sec
    sec.basis = basis(ctx.view, frame[frame["epoch"] > 0]).replace(f" ({ctx.view.epoch_label})", "")
    for (model, method, size), block in frame.groupby(tables.BLOCK, sort=True):
        name = slug(f"epochs_{model}_{method}_{size}")
        cols = [c for c in ctx.view.columns if c in set(block["column"])]
        figures.epoch_grid(block, cols, ctx.figure_dir / name, f"{model}, {method}, {size:,} examples")
        sec.figures.append(Figure(name, f"Score by epoch: {model}, {method}, {size:,} examples."))
    display = frame.pivot_table(index=["model", "method", "size", "data", "column"], columns="epoch",
                                values="value", aggfunc="mean")
    display.columns = [f"epoch {e}" for e in display.columns]
    display = display.map(num).reset_index()
    sec.tables.append(Table("epochs", "Scores by epoch (epoch 0 = base model)", display, frame,
                            labels=5, collapsed=True))
    return sec


def families_section(ctx: Context) -> Section:
    sec = Section("families", "Model families",
                  "Mean delta over training sets per model family, with its paired bootstrap 95% "
                  "interval over items (* marks an interval that excludes 0), and the correlation "
                  "(Pearson r, with n) of deltas between families, paired on method, size, "
                  "training set and column.")
    frame = ctx.deltas
    if frame.empty:
        sec.absent = "No fine-tuned runs in the selection."
        return sec
    means = tables.family_table(frame, ctx.view, ctx.items, ctx.options)
    if means.empty:
        sec.absent = "No delta: the base models have no scores in the selection."
        return sec
    sec.basis = basis(ctx.view, frame)

    def cell(r) -> Cell:
        shown = delta_cell(r["mean_delta"], r["low"], r["high"], bool(r["significant"]),
                           digits=digits(ctx.view, r["column"]))
        return Cell(shown.text, f"{shown.sub}, {r['runs']} runs", shown.marks)

    for (method, size), block in means.groupby(["method", "size"], sort=True):
        body = wide(block, ["family"], ctx.view, cell)
        sec.tables.append(Table(slug(f"families_{method}_{size}"),
                                f"Mean delta per family: {method}, {size:,} examples", body, block))
    corr = tables.family_correlation(frame)
    if corr.empty:
        sec.notes.append("Only one family: no correlation between families to show.")
    else:
        body = pd.DataFrame({"family A": corr["family_a"], "family B": corr["family_b"],
                             "r": [Cell(num(r, 2), f"n={n}") for r, n in zip(corr["r"], corr["n"], strict=True)]})
        sec.tables.append(Table("families_correlation", "Correlation of deltas between families",
                                body, corr, labels=2))
    return sec


def zscores_section(ctx: Context) -> Section:
    sec = Section("data-vs-benchmark", "Training data vs benchmark",
                  "Scores standardised per benchmark column (z over every fine-tuned run), then "
                  "averaged per training set over models, methods and sizes.")
    frame = tables.zscore_table(ctx.view)
    if frame.empty or frame["mean_z"].notna().sum() == 0:
        sec.absent = "Needs 2+ fine-tuned runs per benchmark column whose scores differ."
        return sec
    sec.basis = basis(ctx.view, ctx.view.final)
    matrix = frame.pivot(index="data", columns="column", values="mean_z")
    matrix = matrix[[c for c in ctx.view.columns if c in matrix.columns]]
    figures.heatmap(matrix, ctx.figure_dir / "data_vs_benchmark", "mean z-score", center=0.0)
    sec.figures.append(Figure("data_vs_benchmark", "Mean z-score of each training set per benchmark."))
    body = wide(frame, ["data"], ctx.view, lambda r: Cell(signed(r["mean_z"], 2), f"{r['runs']} runs")
                if r["runs"] else Cell(MISSING, "no spread", marks=("missing",)),
                labels={"data": "training data"})
    sec.tables.append(Table("data_vs_benchmark", "Mean z-score per training set", body, frame))
    return sec


def correlation_section(ctx: Context) -> Section:
    sec = Section("benchmark-correlation", "Benchmark x benchmark correlation",
                  "Pearson r between benchmark columns over every model (base and fine-tuned), "
                  "ordered by average-linkage clustering on 1 - r; n is the number of models "
                  "scored on both.")
    r, n = tables.benchmark_correlation(ctx.view)
    if len(r) < 2 or r.notna().sum().sum() <= len(r):
        sec.absent = "Needs 2+ benchmark columns with 3+ models scored on both and scores that vary."
        return sec
    tree = cluster_tree(r)
    order = cluster_order(r)
    figures.clustered_heatmap(r, tree, ctx.figure_dir / "benchmark_correlation")
    r, n = r.loc[order, order], n.loc[order, order]
    sec.basis = basis(ctx.view, pd.concat([ctx.view.final, ctx.view.base]), order)
    sec.figures.append(Figure("benchmark_correlation", "Correlation between benchmarks, clustered."))
    body = pd.DataFrame({c: [Cell(num(r.loc[i, c], 2), f"n={n.loc[i, c]}") for i in order] for c in order})
    body.insert(0, "benchmark", order)
    export = r.stack(future_stack=True).rename("r").to_frame().join(n.stack().rename("n")).reset_index()
    export.columns = ["column_a", "column_b", "r", "n"]
    sec.tables.append(Table("benchmark_correlation", "Correlation (r) with n", body, export))
    return sec


def loo_section(ctx: Context) -> Section:
    sec = Section("leave-one-out", "Leave-one-out vs all",
                  "Each leave-one-out run's score, with its difference from the run trained on all "
                  "datasets (same model, method and size) and the paired bootstrap 95% interval.")
    frame = tables.loo_table(ctx.view, ctx.items, ctx.options)
    if frame.empty:
        sec.absent = "No leave-one-out runs in the selection."
        return sec
    sec.basis = basis(ctx.view, frame)
    for (model, method, size), block in frame.groupby(tables.BLOCK, sort=True):
        def cell(r):
            if is_missing(r["value"]):
                return Cell(MISSING, marks=("missing",))
            diff = delta_cell(r["diff"], r["low"], r["high"], bool(r["significant"]),
                              digits=digits(ctx.view, r["column"]))
            return Cell(num(r["value"]), f"Δ {diff.text} {diff.sub}", diff.marks)
        body = wide(block, ["data"], ctx.view, cell, labels={"data": "training data"})
        every = ctx.view.final[(ctx.view.final["setting"] == "all") & (ctx.view.final["model"] == model)
                               & (ctx.view.final["method"] == method) & (ctx.view.final["size"] == size)]
        top = {"training data": "all"} | {
            c: Cell(num(every[every["column"] == c]["value"].mean()), marks=("base",)) for c in body.columns[1:]}
        body = pd.concat([pd.DataFrame([top]), body], ignore_index=True)
        sec.tables.append(Table(slug(f"loo_{model}_{method}_{size}"), f"{model}, {method}, {size:,} examples",
                                body, block))
    return sec


def shots_section(ctx: Context) -> Section:
    sec = Section("shots", "Zero-shot vs few-shot",
                  "For benchmarks evaluated at several shot counts: the base model's score, the "
                  "mean over fine-tuned runs, and their mean delta with its paired bootstrap 95% "
                  "interval over items (* marks an interval that excludes 0).")
    frame = tables.shots_table(ctx.view, ctx.items, ctx.options)
    if frame.empty:
        sec.absent = "No benchmark was evaluated at more than one shot count."
        return sec
    sec.basis = basis(ctx.view, ctx.view.rows[ctx.view.rows["task"].isin(set(frame["task"]))])
    body = pd.DataFrame({
        "model": frame["model"], "task": _task_labels(frame),
        "shots": frame["shots"].astype(str),
        "base": frame["base"].map(num), "fine-tuned mean": frame["sft_mean"].map(num),
        "mean delta": [_delta_text(r) for _, r in frame.iterrows()],
        "95% interval": [interval(r["low"], r["high"]) if r["runs"] else MISSING
                         for _, r in frame.iterrows()],
        "runs": frame["runs"].astype(str)})
    sec.tables.append(Table("shots", "Score by shot count", body, frame, labels=3))
    return sec


def lora_section(ctx: Context) -> Section:
    sec = Section("lora-vs-full", "LoRA vs full fine-tuning",
                  "Score of the LoRA (or DoRA) run minus the full fine-tuning run on the same model, "
                  "data and size, with its paired bootstrap 95% interval; and how often the two "
                  "methods' deltas vs the base model have the same sign.")
    if ctx.deltas.empty:
        sec.absent = "No fine-tuned runs in the selection."
        return sec
    frame = tables.lora_full_table(ctx.view, ctx.deltas, ctx.items, ctx.options)
    if frame.empty:
        sec.absent = "Needs both full and LoRA/DoRA runs of the same model, data and size."
        return sec
    both = pd.concat([frame.assign(run_id=frame[f"run_id_{side}"], method=frame[f"method_{side}"])
                      for side in ("lora", "full")])
    sec.basis = basis(ctx.view, both)
    for (model, m_lora, m_full), block in frame.groupby(["model", "method_lora", "method_full"], sort=True):
        body = wide(block, ["size", "data"], ctx.view, lambda r: delta_cell(
            r["diff"], r["low"], r["high"], bool(r["significant"]), digits=digits(ctx.view, r["column"])),
            labels={"data": "training data"})
        sec.tables.append(Table(slug(f"lora_full_{model}_{m_lora}_{m_full}"),
                                f"{model}: {m_lora} − {m_full}", body, block, labels=2))
    agree = tables.sign_agreement(frame)
    body = pd.DataFrame({"model": agree["model"],
                         "same sign": [MISSING if is_missing(a) else f"{100 * a:.0f}%" for a in agree["agree"]],
                         "n": agree["n"].astype(str)})
    sec.tables.append(Table("lora_full_sign", "Sign agreement of deltas (LoRA vs full)", body, agree))
    return sec


def sizes_section(ctx: Context) -> Section:
    sec = Section("sizes", "Small vs large training sets",
                  "Deltas at the smallest and the largest training-set size side by side (* marks a "
                  "delta whose paired bootstrap 95% interval, shown in section 1, excludes 0), and "
                  "the rank agreement of training sets between the two (Kendall tau-b, with n and p).")
    sides, small, large = tables.size_table(ctx.deltas) if not ctx.deltas.empty else (pd.DataFrame(), 0, 0)
    if sides.empty:
        sec.absent = "Needs fine-tuned runs at two or more training-set sizes."
        return sec
    sec.basis = basis(ctx.view, ctx.deltas)
    for (model, method), block in sides.groupby(["model", "method"], sort=True):
        body = wide(block, ["data"], ctx.view, lambda r: Cell(
            f"{_starred(r['delta_small'], r['significant_small'])} → "
            f"{_starred(r['delta_large'], r['significant_large'])}"), labels={"data": "training data"})
        sec.tables.append(Table(slug(f"sizes_{model}_{method}"), f"{model}, {method}: delta at {small:,} "
                                f"→ {large:,} examples", body, block))
    tau = tables.size_tau(sides)
    body = wide(tau, ["model", "method"], ctx.view,
                lambda r: Cell(num(r["tau"], 2), f"n={r['n']}" + ("" if is_missing(r["p"]) else f", p={r['p']:.2f}")))
    sec.tables.append(Table("sizes_kendall_tau", f"Kendall tau between rankings at {small:,} and {large:,}",
                            body, tau, labels=2))
    return sec


def _task_labels(frame: pd.DataFrame) -> list[str]:
    """Task names, with the format only where a task was evaluated in several."""
    formats = frame.groupby("task")["format"].nunique()
    return [f"{t} [{f}]" if f and formats[t] > 1 else t
            for t, f in zip(frame["task"], frame["format"], strict=True)]


def _delta_text(r) -> str:
    return _starred(r["delta_mean"], r["significant"])


def _starred(delta, significant) -> str:
    """A signed delta, with ``*`` when its interval excludes 0."""
    flagged = not is_missing(delta) and not is_missing(significant) and bool(significant)
    return signed(delta) + ("*" if flagged else "")


def categories_section(ctx: Context) -> Section:
    names = ", ".join(f"{k} ({', '.join(v)})" for k, v in ctx.options.categories.items())
    sec = Section("categories", "Category scores",
                  f"Mean score of each category's benchmark columns, and the average of categories. "
                  f"Categories: {names}. MT-Bench ratings count x10. A category is missing where any "
                  f"of its columns is; the average needs every category.")
    frame, used = tables.category_table(ctx.view, ctx.options.categories)
    if not used:
        sec.absent = "No benchmark of the study belongs to a category."
        return sec
    unused = [k for k in ctx.options.categories if k not in used]
    if unused:
        sec.notes.append(f"No data for: {', '.join(unused)}.")
    cols = [c for c in ctx.view.columns if any(ctx.view.column_task[c] in ctx.options.categories[k] for k in used)]
    sec.basis = basis(ctx.view, pd.concat([ctx.view.base, ctx.view.final]), cols)
    body = frame.copy()
    body["size"] = body["size"].astype(str).replace("0", "")
    for col in used + ["Average"]:
        body[col] = body[col].map(num)
    sec.tables.append(Table("categories", "Category scores", body.rename(columns={"data": "training data"}),
                            frame, labels=4))
    return sec
