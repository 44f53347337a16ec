"""Exact and near-duplicate removal: MinHash LSH (``datasketch``) over word n-grams.

Texts are compared by the Jaccard similarity of their sets of word ``ngram``-grams
(lower-cased ``\\w+`` words; a text shorter than ``ngram`` words is one gram). Rows are
taken in order; a row is a duplicate when its normalised text equals an earlier kept
row's, or when the LSH index returns an earlier kept row whose MinHash-estimated
Jaccard similarity is at least ``threshold``. The first of a group is kept. MinHash
uses a fixed seed, so the same rows give the same result on any machine.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def shingles(text: str, n: int) -> set[str]:
    tokens = words(text)
    if len(tokens) <= n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def unique_mask(texts: list[str], *, threshold: float, ngram: int,
                num_perm: int = 128) -> list[bool]:
    """``True`` for each text kept (the first of its group of duplicates)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    first = MinHash(num_perm=num_perm, seed=1)
    reuse = {"permutations": first.permutations, "scheme": first.scheme}  # made once, not per row
    seen: set[str] = set()
    kept: dict[str, MinHash] = {}
    out = []
    for i, text in enumerate(texts):
        exact = " ".join(words(text))
        if exact in seen:
            out.append(False)
            continue
        sketch = MinHash(num_perm=num_perm, seed=1, **reuse)
        sketch.update_batch([s.encode("utf-8") for s in shingles(text, ngram)])
        near = any(sketch.jaccard(kept[key]) >= threshold for key in lsh.query(sketch))
        out.append(not near)
        if not near:
            seen.add(exact)
            kept[str(i)] = sketch
            lsh.insert(str(i), sketch)
    return out
