"""The report's "Evaluation configs" section: per benchmark column, the named config the
scores reproduce (opencompass format), how the study template wrapped the prompts
(``template_mode``) and the task version, read from the provenance files written beside
the predictions (so it needs no store column)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sftlab.report.document import MISSING, Section, Table

FIELDS = ("config", "template_mode", "version")


def _provenance(predictions_path: object) -> dict:
    if not isinstance(predictions_path, str) or not predictions_path:
        return {}
    from sftlab.evaluate.predictions import provenance_path

    path = provenance_path(Path(predictions_path.split("#", 1)[0]))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def configs_section(ctx) -> Section:
    sec = Section("configs", "Evaluation configs",
                  "What each benchmark column reproduces: its format, the OpenCompass config "
                  "(opencompass format), how the study template wrapped the prompts "
                  "(instruction: the whole prompt as {instruction}; rounds: each round "
                  "wrapped as HUMAN / BOT) and the task version. Several values in a cell "
                  "mean the column mixes evaluations made differently.")
    rows = ctx.view.rows
    if rows.empty:
        sec.absent = "No results in the selection."
        return sec
    out = []
    for column in ctx.view.columns:
        group = rows[rows["column"] == column]
        seen: dict[str, set[str]] = {f: set() for f in FIELDS}
        for path in group["predictions_path"].dropna().unique():
            prov = _provenance(path)
            for f in FIELDS:
                if prov.get(f) is not None:
                    seen[f].add(str(prov[f]))
        first = group.iloc[0]
        entry = {"column": column, "format": str(first["format"])}
        entry |= {f: ", ".join(sorted(v)) if v else MISSING for f, v in seen.items()}
        out.append(entry)
    frame = pd.DataFrame(out)
    sec.tables.append(Table("configs", "Evaluation configs per benchmark column", frame, frame))
    return sec
