"""Strict JSON out: NaN and infinities become ``null``, so every file sftlab writes is JSON.

Python's :func:`json.dumps` writes ``NaN`` by default, which no other JSON reader accepts.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """A copy of ``value`` with every non-finite float (NaN, +-inf) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` of :func:`finite` ``(value)``; never writes NaN."""
    kwargs.setdefault("default", str)
    return json.dumps(finite(value), allow_nan=False, **kwargs)


# Characters JSON leaves raw under ``ensure_ascii=False`` that ``str.splitlines`` and
# some JSONL readers treat as line breaks; escaped, a JSONL row stays one line for all.
_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def line(value: Any) -> str:
    """One JSONL row, ending in ``\\n``: UTF-8 kept readable, but every character some
    reader would split a line on escaped (the text reads back unchanged)."""
    return dumps(value, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def lines(text: str) -> list[str]:
    """The lines of a JSONL text, split on ``\\n`` only: ``str.splitlines`` would also
    split inside a string holding U+2028 and friends, which other writers leave raw."""
    return [part.removesuffix("\r") for part in text.split("\n")]
