"""The report section on RL runs (``type: grpo``): how each loss type weighs a response,
and the mean response length and reward by step.

It reads the study folder: ``ckpt/<run_id>/rl_log.jsonl`` of every RL run
(:mod:`sftlab.methods.grpo`), one row per response per optimizer step with its measured
weight ``m_i`` under each loss type. Responses are binned by ``L_i / mean L`` (their
length over the mean length of their step); each cell is the mean of
``m_i / m_i^GRPO`` in the bin, which for DAPO's token-level loss is ``L_i / mean L``
itself and for GRPO 1 by definition.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sftlab import jsonio
from sftlab.methods.aggregation import AGGREGATIONS
from sftlab.report.document import Section, Table, slug

RL_LOG = "rl_log.jsonl"
BINS = (0.0, 0.5, 0.8, 1.25, 2.0, float("inf"))


def rl_section(ctx) -> Section:
    sec = Section("rl", "RL: loss aggregation and reward by step",
                  "For each RL run: the weight each loss type gives a response relative to GRPO's "
                  "(m_i / m_i^GRPO, measured by autograd through TRL's loss code on the run's own "
                  "batches) against its length relative to its step's mean (L_i / mean L); then "
                  "the mean response length and reward by optimizer step.")
    root = ctx.options.predictions_root
    logs = read_logs(Path(root)) if root is not None else {}
    if not logs:
        sec.absent = "No RL run (type: grpo) has written an rl_log.jsonl yet."
        return sec
    for run_id, frame in sorted(logs.items()):
        body, export = weight_table(frame)
        sec.tables.append(Table(slug(f"rl_weights_{run_id}"),
                                f"run {run_id}: m_i / m_i^GRPO by L_i / mean L", body, export))
        steps = by_step(frame)
        sec.tables.append(Table(slug(f"rl_steps_{run_id}"),
                                f"run {run_id}: mean length and reward by step",
                                steps.astype(str), steps))
    return sec


def read_logs(root: Path) -> dict[str, pd.DataFrame]:
    """Run id -> its rl_log rows (unreadable lines skipped: a line cut by a kill)."""
    out = {}
    for path in sorted((root / "ckpt").glob(f"*/{RL_LOG}")):
        rows = []
        for line in jsonio.lines(path.read_text(encoding="utf-8")):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        if rows:
            out[path.parent.name] = pd.DataFrame(rows)
    return out


def weight_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, export): one row per L_i / mean L bin, one column per loss type."""
    frame = frame.copy()
    frame["relative_length"] = frame["length"] / frame.groupby("step")["length"].transform("mean")
    frame["bin"] = pd.cut(frame["relative_length"], BINS, right=False)
    for loss in AGGREGATIONS:
        frame[loss] = [w[loss] / w["grpo"] for w in frame["weights"]]
    export = (frame.groupby("bin", observed=True)
              .agg(responses=("length", "size"), mean_relative_length=("relative_length", "mean"),
                   **{loss: (loss, "mean") for loss in AGGREGATIONS})
              .reset_index())
    export["bin"] = export["bin"].astype(str)
    display = export.copy()
    for col in ("mean_relative_length", *AGGREGATIONS):
        display[col] = display[col].map(lambda v: f"{v:.2f}")
    return display.astype(str), export


def by_step(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean completion length and reward of each optimizer step."""
    return (frame.groupby("step").agg(responses=("length", "size"), mean_length=("length", "mean"),
                                      mean_reward=("reward", "mean"))
            .round(3).reset_index())
