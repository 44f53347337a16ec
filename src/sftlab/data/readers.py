"""Raw rows from a local file, a folder of files, or a Hugging Face hub dataset.

A reader yields ``(where, row)`` pairs: ``where`` names the row for error
messages (``data.jsonl:12``, ``data.json:40 (item 3)``, ``data.csv:7``,
``data.parquet (row 5)``, ``tatsu-lab/alpaca[train] (row 9)``) and ``row`` is a
dict, or a :class:`~sftlab.data.records.BadRow` for a row that could not even be
parsed (a broken JSON line, a CSV row with the wrong number of columns). Problems
with a whole file (missing, not UTF-8, not a JSON array) raise ``UserError``.

File kinds, by the study's ``format`` for generic sources and by extension otherwise:

- ``.json``: a JSON array of objects, or JSON lines.
- ``.jsonl`` / ``.ndjson``: JSON lines (blank lines are skipped).
- ``.csv``: RFC 4180 (quoted fields may span lines); a header row unless ``columns``.
- ``.tsv``: one row per line, fields split on tabs, no quoting; the backslash escapes
  ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` are decoded (the FLAN CoT files write newlines
  that way). A header row unless ``columns``.
- ``.parquet``: read in record batches with pyarrow.

A folder is read file by file (sorted, recursively) for every file of a known kind.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from sftlab import jsonio
from sftlab.data.records import BadRow
from sftlab.errors import UserError

Row = tuple[str, "dict | BadRow"]
KINDS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
         ".parquet": "parquet"}
_LOCAL_HINT = re.compile(r"^(\.{1,2}/|/|~)|\.(json|jsonl|ndjson|csv|tsv|parquet)$", re.I)
_TSV_ESCAPE = re.compile(r"\\([ntr\\])")
_TSV_CHARS = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def looks_local(path: str) -> bool:
    """Whether a path that does not exist was meant as a local file (not a hub id)."""
    return bool(_LOCAL_HINT.search(path))


def iter_rows(path: str, *, kind: str | None = None, columns: list[str] | None = None,
              split: str = "train", subset: str | None = None) -> Iterator[Row]:
    """Every row of a local file / folder, or of a hub dataset when ``path`` is not local."""
    local = Path(path)
    if local.is_dir():
        yield from _iter_folder(local, kind, columns)
    elif local.is_file():
        yield from _iter_file(local, kind or _kind_of(local), columns)
    elif looks_local(path):
        raise UserError(f"data file not found: {path}")
    else:
        yield from _iter_hub(path, split, subset)


def _kind_of(path: Path) -> str:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: cannot tell the file kind from the extension "
                        f"'{path.suffix}' (expected one of {', '.join(KINDS)})")
    return kind


def _iter_folder(folder: Path, kind: str | None, columns: list[str] | None) -> Iterator[Row]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in KINDS
                   and (kind is None or KINDS[p.suffix.lower()] == kind))
    if not files:
        raise UserError(f"{folder}: no data files in this folder "
                        f"(looked for {', '.join(KINDS) if kind is None else kind})")
    for file in files:
        yield from _iter_file(file, kind or _kind_of(file), columns)


def _iter_file(path: Path, kind: str, columns: list[str] | None) -> Iterator[Row]:
    if kind == "parquet":
        yield from _iter_parquet(path)
        return
    text = _read_text(path)
    if kind == "json":
        yield from _iter_json(path, text)
    elif kind == "jsonl":
        yield from _iter_jsonl(path, text)
    elif kind == "csv":
        yield from _iter_csv(path, text, columns)
    elif kind == "tsv":
        yield from _iter_tsv(path, text, columns)
    else:
        raise UserError(f"{path}: unknown file kind '{kind}'")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte {err.start}: {err.reason})") from None
    return text.removeprefix("\ufeff")


def _iter_jsonl(path: Path, text: str) -> Iterator[Row]:
    for number, line in enumerate(jsonio.lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield where, BadRow(f"broken JSON line ({err.msg} at column {err.colno})")
            continue
        except RecursionError:
            yield where, BadRow("JSON nested too deeply to read")
            continue
        yield where, row if isinstance(row, dict) else BadRow(
            f"expected a JSON object, found {type(row).__name__}")


def _iter_json(path: Path, text: str) -> Iterator[Row]:
    """A JSON array of objects (each row located by line), or JSON lines."""
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise UserError(f"{path}: the file is empty")
    if text[start] != "[":
        if text[start] == "{" and _is_json_lines(text, start):
            yield from _iter_jsonl(path, text)
            return
        raise UserError(f"{path}: expected a JSON array of objects (or JSON lines)")
    newlines = [m.start() for m in re.finditer("\n", text)]
    decoder = json.JSONDecoder()
    pos, item = _skip_space(text, start + 1), 0
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line = bisect.bisect_right(newlines, pos - 1) + 1
        try:
            row, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: broken JSON ({err.msg}, column {err.colno})") from None
        except RecursionError:
            raise UserError(f"{path}:{line}: JSON nested too deeply to read") from None
        where = f"{path}:{line} (item {item})"
        yield where, row if isinstance(row, dict) else BadRow(
            f"expected a JSON object, found {type(row).__name__}")
        item += 1
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]" and not text[pos + 1:].strip():
            return
        line = bisect.bisect_right(newlines, pos - 1) + 1
        raise UserError(f"{path}:{line}: broken JSON (expected ',' or ']' after item {item - 1})")


def _is_json_lines(text: str, start: int) -> bool:
    try:
        json.loads(text[start:])
    except json.JSONDecodeError as err:
        return err.msg == "Extra data"
    return False


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _iter_csv(path: Path, text: str, columns: list[str] | None) -> Iterator[Row]:
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    yield from _table_rows(path, reader, columns, lambda: reader.line_num)


def _iter_tsv(path: Path, text: str, columns: list[str] | None) -> Iterator[Row]:
    numbered = ((n, line) for n, line in enumerate(jsonio.lines(text), start=1) if line.strip())
    current = {"line": 0}

    def cells():
        for number, line in numbered:
            current["line"] = number
            yield [_TSV_ESCAPE.sub(lambda m: _TSV_CHARS[m.group(1)], c) for c in line.split("\t")]

    yield from _table_rows(path, cells(), columns, lambda: current["line"])


def _table_rows(path: Path, cells, columns: list[str] | None, line_of) -> Iterator[Row]:
    try:
        header = list(columns) if columns else _header(path, cells)
        for values in cells:
            where = f"{path}:{line_of()}"
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield where, BadRow(f"expected {len(header)} columns "
                                    f"({', '.join(header)}), found {len(values)}")
                continue
            yield where, dict(zip(header, values, strict=True))
    except csv.Error as err:
        raise UserError(f"{path}:{line_of()}: broken CSV ({err})") from None


def _header(path: Path, cells) -> list[str]:
    header = next(iter(cells), None)
    if header is None:
        raise UserError(f"{path}: the file is empty (expected a header row, or set `columns`)")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UserError(f"{path}:1: duplicate column name(s) in the header: {', '.join(dupes)}")
    return header


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    index = 0
    for batch in reader.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield f"{path} (row {index})", row
            index += 1


def _iter_hub(path: str, split: str, subset: str | None) -> Iterator[Row]:
    import datasets

    try:
        data = datasets.load_dataset(path, subset, split=split)
    except Exception as err:  # datasets raises many types (offline, missing, bad config)
        raise UserError(
            f"cannot load '{path}' (split '{split}') with datasets.load_dataset: {err}. "
            "If it is meant as a local file, check the path (relative paths are looked up "
            "beside the study file, then in the current directory)") from None
    for index, row in enumerate(data):
        yield f"{path}[{split}] (row {index})", row
