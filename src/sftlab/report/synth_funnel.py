"""The report section on synthetic training data: the funnel of each ``format: synth`` source.

It reads the study folder, not the store: the data manifest (``data/manifest.json``)
names each synth source and its key, and ``synth/<key>/summary.json`` holds the funnel
written by :mod:`sftlab.synth.pipeline`. When the manifest holds several keys for one
source (its spec changed), the newest generated one is shown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sftlab.report.document import Section, Table, slug
from sftlab.synth.spec import STAGES


def synth_funnel_section(ctx) -> Section:
    sec = Section("synth", "Synthetic data funnel",
                  "Rows of each synthetic source through its filters, per condition: generated "
                  "(the generator answered), parsed (valid JSON), judged (judge score at or above "
                  "the threshold), resolved (re-solve pass rate inside the window), unique (no "
                  "near duplicate), clean (no n-gram overlap with evaluation sets), kept.")
    root = ctx.options.predictions_root
    funnels = latest_funnels(Path(root)) if root is not None else {}
    if not funnels:
        sec.absent = "No synthetic (format: synth) source was generated for this study."
        return sec
    for name, (key, summary) in sorted(funnels.items()):
        body, export = funnel_tables(summary)
        generated, kept = (sum(f[s] for f in summary["funnel"]) for s in ("generated", "kept"))
        share = f"{kept / generated:.0%}" if generated else "none"
        sec.tables.append(Table(slug(f"synth_{name}"),
                                f"{name} (key {key}): {kept:,} of {generated:,} generated rows "
                                f"kept ({share})", body, export,
                                labels=max(1, len(summary["conditions"][0]))))
        if not summary.get("complete", False):
            sec.notes.append(f"{name}: {summary.get('failed_requests')} request(s) failed; "
                             "this funnel is incomplete.")
    return sec


def latest_funnels(root: Path) -> dict[str, tuple[str, dict]]:
    """Source name -> (key, summary) of its newest generated synth run."""
    try:
        manifest = json.loads((root / "data" / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found: dict[str, tuple[float, str, dict]] = {}
    for entry in manifest.get("sources", {}).values():
        if entry.get("format") != "synth" or not entry.get("fingerprint"):
            continue
        path = root / "synth" / entry["fingerprint"] / "summary.json"
        try:
            summary, when = json.loads(path.read_text(encoding="utf-8")), path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if entry["name"] not in found or when > found[entry["name"]][0]:
            found[entry["name"]] = (when, entry["fingerprint"], summary)
    return {name: (key, summary) for name, (_, key, summary) in found.items()}


def funnel_tables(summary: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, export): one row per condition and a total row; export without the total."""
    rows = [{**{k: str(v) for k, v in cond.items()}, **counts}
            for cond, counts in zip(summary["conditions"], summary["funnel"], strict=True)]
    export = pd.DataFrame(rows)
    names = list(summary["conditions"][0]) if summary["conditions"] else []
    total = {**dict.fromkeys(names, ""), **{s: int(export[s].sum()) for s in STAGES}}
    if names:
        total[names[0]] = "total"
    display = pd.concat([export, pd.DataFrame([total])], ignore_index=True)
    return display.astype({s: str for s in STAGES}), export
