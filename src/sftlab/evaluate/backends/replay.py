"""The replay path: outputs produced elsewhere, read from a JSONL file and scored.

The file has one row per sample: ``{"id": ..., "output": ...}``; several rows with
the same id are several samples. A predictions file sftlab wrote is read as it is:
``item_id`` stands for ``id``, and a row's ``samples`` list (written when an item has
several) gives all its outputs. Every id must have the same number of rows: its
samples. That number is ``samples`` when given, else the file's most common count
(ties: the smaller), so an id repeated by mistake is refused, never counted twice. ``id`` is the benchmark's own id where it has
one (HumanEval / MBPP ``task_id``, MATH ``unique_id``) and the 0-based row index
of the data file otherwise. ``output`` is exactly the text generated after the
prompt.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sftlab.errors import UserError


def load_outputs(path: str | Path, *, samples: int | None = None) -> dict[str, list[str]]:
    """Map item id -> generated texts, in file order; every id has the same number of rows
    (``samples``, or the file's most common count)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file {str(path)!r} does not exist")
    outputs: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    problems: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"line {n}: not JSON ({err.msg})")
                continue
            key = "id" if isinstance(row, dict) and "id" in row else "item_id"
            if not isinstance(row, dict) or key not in row or "output" not in row:
                problems.append(f"line {n}: needs keys 'id' (or 'item_id') and 'output'")
                continue
            texts = _texts(row)
            if texts is None:
                problems.append(f"line {n}: 'output' must be a string (and 'samples' a list "
                                "of objects with a string 'output')")
                continue
            rows[str(row[key])] = rows.get(str(row[key]), 0) + 1
            if texts:  # a row sftlab wrote for an item with no output ("missing") adds none
                outputs.setdefault(str(row[key]), []).extend(texts)
        if problems:
            raise UserError(problems[:20], where=str(path))
    if not outputs:
        raise UserError("no predictions in the file", where=str(path))
    if samples is None:
        counts = Counter(rows.values())
        samples = min(counts, key=lambda c: (-counts[c], c))
    uneven = [f"{i} ({count} rows)" for i, count in rows.items() if count != samples]
    if uneven:
        raise UserError(f"{len(uneven)} id(s) do not have exactly {samples} row(s): "
                        f"{', '.join(uneven[:5])}{' ...' if len(uneven) > 5 else ''}; "
                        "each id needs one row per sample (give --samples K when every id "
                        "has K samples)", where=str(path))
    return outputs


def _texts(row: dict) -> list[str] | None:
    """The outputs of one row: its ``samples``' outputs, else its ``output``; None when
    malformed."""
    samples = row.get("samples")
    if samples is not None:
        if not isinstance(samples, list) or not all(
                isinstance(s, dict) and isinstance(s.get("output"), str) for s in samples):
            return None
        return [s["output"] for s in samples]
    if row["output"] is None and row.get("outcome") == "missing":
        return []
    return [row["output"]] if isinstance(row["output"], str) else None
