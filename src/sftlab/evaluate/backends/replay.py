"""The replay path: outputs produced elsewhere, read from a JSONL file and scored.

The file has one row per sample: ``{"id": ..., "output": ...}``. Every id must have
the same number of rows, ``samples`` (1 unless told): with ``samples=1`` a repeated id
is refused (it is a mistake, never counted twice); with ``samples=k`` each id's k rows
are its k samples (pass@k). ``id`` is the benchmark's own id where it has
one (HumanEval / MBPP ``task_id``, MATH ``unique_id``) and the 0-based row index
of the data file otherwise. ``output`` is exactly the text generated after the
prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from sftlab.errors import UserError


def load_outputs(path: str | Path, *, samples: int = 1) -> dict[str, list[str]]:
    """Map item id -> generated texts, in file order; each id must have ``samples`` rows."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file {str(path)!r} does not exist")
    outputs: dict[str, list[str]] = {}
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
            if not isinstance(row, dict) or "id" not in row or "output" not in row:
                problems.append(f"line {n}: needs keys 'id' and 'output'")
                continue
            if not isinstance(row["output"], str):
                problems.append(f"line {n}: 'output' must be a string")
                continue
            outputs.setdefault(str(row["id"]), []).append(row["output"])
        if problems:
            raise UserError(problems[:20], where=str(path))
    if not outputs:
        raise UserError("no predictions in the file", where=str(path))
    uneven = [f"{i} ({len(texts)} rows)" for i, texts in outputs.items() if len(texts) != samples]
    if uneven:
        raise UserError(f"{len(uneven)} id(s) do not have exactly {samples} row(s): "
                        f"{', '.join(uneven[:5])}{' ...' if len(uneven) > 5 else ''}; "
                        "each id needs one row per sample (give --samples K when every id "
                        "has K samples)", where=str(path))
    return outputs
