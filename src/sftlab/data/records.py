"""The plain record every source is normalised to, and the row-level error.

Every loader turns a source's native rows into :class:`Example` records: an
``instruction`` (the user's request, Alpaca's ``input`` already joined to it)
and a ``response``. The study template renders them; nothing else about the
source survives except its name (``source``) and a stable ``id``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftlab import jsonio


@dataclass(frozen=True, slots=True)
class Example:
    """One normalised training example.

    ``id`` is ``<source>/<row>`` (0-based row index over the source's files), or
    ``<source>/<row>.<turn>`` when ``multi_turn: all`` yields several per row.
    """

    id: str
    source: str
    instruction: str
    response: str


class BadRow(ValueError):
    """A row that cannot be turned into an example (missing field, wrong type, ...).

    The message says what is wrong; the reader adds where (``path:line``).
    """


def join_input(instruction: str, input_text: str | None) -> str:
    """Alpaca-style join: ``instruction + "\\n\\n" + input`` when ``input`` is non-empty."""
    if input_text is None or not input_text.strip():
        return instruction
    return f"{instruction}\n\n{input_text}"


def training_row(example: Example, prompt: str) -> str:
    """The JSON line written to a prepared training set (keys in a fixed order).

    ``prompt`` is the template rendered up to the response; ``completion`` is the
    response (training appends the tokenizer's EOS).
    """
    row = {
        "id": example.id,
        "source": example.source,
        "instruction": example.instruction,
        "response": example.response,
        "prompt": prompt,
        "completion": example.response,
    }
    return jsonio.line(row)
