"""Decontamination: drop generated problems sharing a word n-gram with an evaluation set.

Reference texts come from data files (``.jsonl``, ``.json``, ``.csv``, ``.tsv``,
``.parquet``: from each row the first present of :data:`TEXT_FIELDS`, else every
text value of at least :data:`MIN_WORDS` words; ``.txt``: one text per non-empty line).
Words are lower-cased ``\\w+`` runs, so case, punctuation and spacing do not hide a
copy. A reference text of ``k < ngram`` words (but at least :data:`MIN_WORDS`) is one
gram of ``k`` words. A generated problem is contaminated when any of its grams, of
``ngram`` words or of the shorter sizes present, is a reference gram: a verbatim or
lightly edited copy of any evaluation item is caught, a shared stock phrase shorter
than ``ngram`` words is not.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sftlab.errors import UserError
from sftlab.synth.near_duplicates import words

TEXT_FIELDS = ("question", "problem", "prompt", "instruction", "query", "input", "text")
MIN_WORDS = 4
READABLE = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")


def reference_texts(path: Path) -> list[str]:
    """The texts of one reference file."""
    from sftlab.evaluate.datafiles import read_records

    if path.suffix.lower() == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    if path.suffix.lower() not in READABLE:
        raise UserError(f"cannot read {path.suffix!r} files (use {', '.join(READABLE)})",
                        where=str(path))
    texts = []
    for row in read_records(path):
        if not isinstance(row, dict):
            continue
        named = [row[k] for k in TEXT_FIELDS if isinstance(row.get(k), str)]
        values = named[:1] or [v for v in row.values() if isinstance(v, str)]
        texts += [v for v in values if len(words(v)) >= MIN_WORDS]
    return texts


class NgramIndex:
    """The word n-grams of a set of reference texts, by gram size."""

    def __init__(self, ngram: int):
        self.ngram = ngram
        self.grams: dict[int, set[str]] = defaultdict(set)
        self.texts = 0

    def add(self, text: str) -> None:
        tokens = words(text)
        if len(tokens) < MIN_WORDS:
            return
        size = min(self.ngram, len(tokens))
        self.grams[size].update(_grams(tokens, size))
        self.texts += 1

    def contaminated(self, text: str) -> bool:
        tokens = words(text)
        return any(not grams.isdisjoint(_grams(tokens, size))
                   for size, grams in self.grams.items() if size <= len(tokens))


def _grams(tokens: list[str], size: int) -> set[str]:
    return {" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}


def build_index(files: list[Path], ngram: int) -> NgramIndex:
    index = NgramIndex(ngram)
    for path in files:
        for text in reference_texts(path):
            index.add(text)
    return index
