"""The report's figures (matplotlib, Agg): each written as PNG and SVG, atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from scipy.cluster import hierarchy

from sftlab import atomic

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def text(label) -> str:
    """A label matplotlib shows literally (``$`` would start mathtext)."""
    return str(label).replace("$", r"\$")


def save(fig: Figure, stem: Path, *, tight: bool = True) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` via temp names; return both paths."""
    FigureCanvasAgg(fig)
    paths = []
    for ext in ("png", "svg"):
        final = stem.with_suffix(f".{ext}")

        def draw(tmp: Path, ext: str = ext) -> None:
            with rc_context({"svg.fonttype": "none"}):  # SVG text as XML-escaped text: 2x faster
                fig.savefig(tmp, format=ext, dpi=110, bbox_inches="tight" if tight else None,
                            metadata={"Date": None} if ext == "svg" else None)

        atomic.write_with(final, draw)
        paths.append(final)
    return paths


def epoch_grid(frame: pd.DataFrame, columns: list[str], stem: Path, title: str) -> list[Path]:
    """One panel per benchmark column: score by epoch, a line per training set;
    the base model (epoch 0) as a dashed line."""
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    height = 2.5 * nrows + 1.0  # no layout engine: it would triple the drawing time
    fig = Figure(figsize=(3.4 * ncols, height))
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.65 / height, bottom=0.85 / height,
                        hspace=0.55, wspace=0.3)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    datas = sorted(set(frame["data"]), key=lambda d: (d == "all", d.startswith("all - "), d))
    styles = _line_styles(datas)
    lines = frame.pivot_table(index=["column", "data"], columns="epoch", values="value", aggfunc="mean")
    for ax, column in zip(axes, columns, strict=False):
        if 0 in lines.columns and column in lines.index:
            base = lines.loc[column, 0].dropna()
            if len(base):
                ax.axhline(float(base.iloc[0]), color="#555", linestyle="--", linewidth=1)
        for data in datas:
            if (column, data) not in lines.index:
                continue
            line = lines.loc[(column, data)].dropna()
            ax.plot(line.index, line.to_numpy(), markersize=3, **styles[data])
        ax.set_title(text(column), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    handles = [Line2D([], [], markersize=3, **styles[d]) for d in datas]
    fig.legend(handles=handles, loc="lower center", ncols=min(6, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle(text(title), fontsize=10)
    return save(fig, stem, tight=False)


def _line_styles(datas: list[str]) -> dict[str, dict]:
    """One colour per dataset: solid for the dataset alone, dotted for the mixture without it,
    black for `all`."""
    names = sorted({d.removeprefix("all - ") for d in datas if d != "all"})
    palette = PALETTE if len(names) <= len(PALETTE) else [colormaps["tab20"](i % 20) for i in range(len(names))]
    colour = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    styles = {}
    for d in datas:
        if d == "all":
            styles[d] = {"color": "black", "linewidth": 2.0, "marker": "s"}
        elif d.startswith("all - "):
            styles[d] = {"color": colour[d.removeprefix("all - ")], "linewidth": 1.2, "linestyle": ":",
                         "marker": "x"}
        else:
            styles[d] = {"color": colour[d], "linewidth": 1.4, "marker": "o"}
        styles[d]["label"] = text(d)
    return styles


def heatmap(matrix: pd.DataFrame, stem: Path, label: str, *, center: float = 0.0,
            digits: int = 2, limit: float | None = None) -> list[Path]:
    """An annotated heatmap (diverging colours around ``center``); NaN cells left blank."""
    fig = Figure(figsize=(1.0 + 0.75 * matrix.shape[1] + 1.6, 1.2 + 0.42 * matrix.shape[0]),
                 layout="constrained")
    ax = fig.subplots()
    _draw_heatmap(fig, ax, matrix, label, center, digits, limit)
    return save(fig, stem)


def _draw_heatmap(fig, ax, matrix, label, center, digits, limit, extra_axes=()) -> None:
    values = matrix.to_numpy(dtype=float)
    span = limit or (np.nanmax(np.abs(values - center)) if np.isfinite(values).any() else 1.0) or 1.0
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=center - span,
                      vmax=center + span, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), [text(c) for c in matrix.columns], rotation=45,
                  ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), [text(r) for r in matrix.index], fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            dark = abs(v - center) > 0.6 * span
            ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    fig.colorbar(image, ax=[*extra_axes, ax] if extra_axes else ax, label=label, shrink=0.8)


def clustered_heatmap(r: pd.DataFrame, tree: np.ndarray | None, stem: Path) -> list[Path]:
    """The correlation matrix in the leaf order of ``tree``, with its dendrogram above."""
    if tree is not None:
        order = hierarchy.leaves_list(tree)
        r = r.iloc[order, order]
    size = 1.6 + 0.6 * len(r)
    fig = Figure(figsize=(size + 1.6, size + 1.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 4])
    if tree is not None:
        hierarchy.dendrogram(tree, ax=top, no_labels=True, color_threshold=0,
                             above_threshold_color="#555")
        top.set_xlim(0, 10 * len(r))
    top.axis("off")
    _draw_heatmap(fig, bottom, r, "Pearson r", 0.0, 2, 1.0, extra_axes=[top])
    return save(fig, stem)
