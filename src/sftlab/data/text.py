"""Raw text for continued pretraining (``format: text``) and a method's own data.

A text source is a ``.txt`` file (one document), a folder of ``.txt`` files (one
document each, in name order), or JSON lines whose ``text`` field is a document.
:func:`link_lines` gives the JSON lines of a method's prepared set: ``{"id",
"source", "text"}`` per document for text, and for any other format every example
of the source (no sampling), rendered with the study's template like a grid set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sftlab import jsonio
from sftlab.errors import UserError


def read_documents(path: str, *, where: str) -> Iterator[str]:
    """Every non-empty document of a text source (see the module docstring)."""
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl"))
        if not files:
            raise UserError(f"no .txt or .jsonl files in {path}", where=where)
        for file in files:
            yield from read_documents(str(file), where=where)
    elif local.suffix == ".jsonl":
        for number, line in enumerate(local.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UserError("each JSON line of a text source needs a string 'text' field",
                                where=f"{local}:{number}")
            if row["text"].strip():
                yield row["text"]
    elif local.is_file():
        text = local.read_text(encoding="utf-8").removeprefix("\ufeff")
        if text.strip():
            yield text
    else:
        raise UserError(f"text data not found: {path}", where=where)


def link_lines(study, spec, *, name: str, where: str) -> Iterator[str]:
    """The JSON lines of a method's own data set (``methods.<name>.data``)."""
    path = study.resolve_path(spec.path)
    if spec.format == "text":
        for i, doc in enumerate(read_documents(path, where=where)):
            yield jsonio.line({"id": f"{name}/{i}", "source": name, "text": doc})
        return
    from sftlab.data.loaders import load_source
    from sftlab.data.records import training_row
    from sftlab.study.template import render_prompt

    for example in load_source(spec, path, where=where).examples:
        yield training_row(example, render_prompt(study.template, example.instruction))
