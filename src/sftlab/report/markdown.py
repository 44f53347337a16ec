"""The Markdown report (``index.md``) and each table's ``.md`` file. Text is HTML-escaped
too, since Markdown viewers render inline HTML."""

from __future__ import annotations

import html
import re

import pandas as pd

from sftlab.report.document import Cell, Section


def esc(value) -> str:
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ")


_MD_PUNCT = re.compile(r"([\\`*_\[\]()!|~:<>{}])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_WWW = re.compile(r"(www)\.", re.IGNORECASE)


def inert(value) -> str:
    """Model or data text as inert Markdown: HTML escaped, every character that can open a
    link, an image, an autolink, emphasis or code backslash-escaped, all on one line. A
    ``[x](javascript:...)`` or ``![](https://...)`` in a model's output shows as text."""
    text = _LINE_BREAKS.sub(" ", html.escape(str(value), quote=False))
    return _WWW.sub(r"\1\\.", _MD_PUNCT.sub(r"\\\1", text))


def cell_md(value) -> str:
    if not isinstance(value, Cell):
        return esc(value)
    text = esc(value.text)
    if "best" in value.marks:
        text = f"**{text}**"
    elif "worst" in value.marks:
        text = f"_{text}_"
    return f"{text} {esc(value.sub)}" if value.sub else text


def table_md(frame: pd.DataFrame) -> str:
    """A display frame as a pipe table."""
    head = "| " + " | ".join(esc(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell_md(v) for v in values) + " |" for values in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) + "\n"


def render(title: str, meta: list[str], sections: list[Section]) -> str:
    """The whole Markdown page."""
    out = [f"# {esc(title)}", "", *[f"{esc(m)}  " for m in meta], "",
           "Marks: **best** / _worst_ in column; `*` = 95% interval excludes 0; — = missing.", ""]
    out += ["## Contents", ""]
    out += [f"{i}. [{esc(s.title)}](#{s.key})" + (" (no data)" if s.absent else "")
            for i, s in enumerate(sections, 1)]
    for i, sec in enumerate(sections, 1):
        out += ["", f'<a id="{sec.key}"></a>', f"## {i}. {esc(sec.title)}", "", esc(sec.intro), ""]
        if sec.absent:
            out += [f"> Not shown: {esc(sec.absent)}", ""]
        if sec.basis:
            out += [f"_{esc(sec.basis)}_", ""]
        out += [f"_{esc(n)}_\n" for n in sec.notes]
        for j, fig in enumerate(sec.figures, 1):
            out += [f"![Figure {i}.{j}: {esc(fig.caption)}](figures/{fig.name}.png)", "",
                    f"Figure {i}.{j}: {esc(fig.caption)} ([SVG](figures/{fig.name}.svg))", ""]
        for j, table in enumerate(sec.tables, 1):
            out += [f"**Table {i}.{j}: {esc(table.caption)}** ([CSV](tables/{table.name}.csv))", "",
                    table_md(table.display)]
        for ex in sec.examples:
            out += [f"**{inert(ex.column)} · item {inert(ex.item_id)}**", ""]
            if ex.prompt:
                out += ["Prompt: " + inert(ex.prompt), ""]
            out += [f"- {inert(o.who)} (score {inert(o.score)}): {inert(o.output)}"
                    for o in ex.outputs] + [""]
    return "\n".join(out) + "\n"
