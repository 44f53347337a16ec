"""Per-item prediction files and their provenance, written atomically.

``<out_dir>/<task>-<shots>shot-<format>.jsonl``: one JSON row per item with
``item_id, prompt_hash, prompt, output, extracted, correct, score, outcome``
(plus task-specific fields); ``<same stem>.provenance.json`` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftlab import atomic, jsonio


def predictions_path(out_dir: Path, task: str, shots: int, fmt: str, repeat: int = 1) -> Path:
    """``<task>-<shots>shot-<format>.jsonl``; the same task, shots and format asked again in
    one call (greedy and sampled, two configs) gets ``-2``, ``-3`` ... so none overwrites another."""
    suffix = f"-{repeat}" if repeat > 1 else ""
    return Path(out_dir) / f"{task}-{shots}shot-{fmt}{suffix}.jsonl"


def predictions_paths(out_dir: Path, keys: list[tuple[str, int, str]]) -> list[Path]:
    """One distinct :func:`predictions_path` per ``(task, shots, format)`` key, in order."""
    seen: dict[tuple[str, int, str], int] = {}
    paths = []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        paths.append(predictions_path(out_dir, *key, repeat=seen[key]))
    return paths


def provenance_path(pred_path: Path) -> Path:
    return pred_path.with_name(pred_path.name.removesuffix(".jsonl") + ".provenance.json")


def write_predictions(path: Path, rows: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
    """Write the rows (JSONL) then the provenance (JSON), each atomically."""
    text = "".join(jsonio.line(r) for r in rows)
    atomic.write_text(path, text)
    atomic.write_text(provenance_path(path), jsonio.dumps(provenance, indent=2) + "\n")


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Rows of a predictions file written by :func:`write_predictions`."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
