"""Repeated sampling: the settings of a sampled benchmark and the scores of its samples.

Settings (task options, from a study's benchmark or ``sftlab eval`` / ``sftlab score``):
``samples`` (n per item), ``temperature``, ``top_p``, ``seed`` and ``k`` (the list of k
to report). With ``samples > 1`` the default is temperature 0.8, top-p 0.95; one
sample is greedy unless a temperature is given. Each sample's randomness depends on
(seed, item id, sample index) only (:func:`sftlab.models.generation.sample_seed`).

Scores over the n samples of each item, for every k in ``k`` (default: 1, 2, 4, ...
up to n, and n), in percent, averaged over items:

- ``pass@K``: the unbiased estimator of Chen et al. (2021);
- ``cons@K`` (tasks with a final answer: math, gsm8k): self-consistency. Answers are
  compared with Math-Verify in both directions (``verify`` is not symmetric),
  clustered greedily in order of appearance, the largest cluster wins (ties: the one
  seen first), and the subset scores the correctness of the winner's first sample;
- ``maj@K``: the same vote by exact string equality of the extracted answers (as
  lighteval's ``maj@k``), so the report can show what Math-Verify voting changes.

A sample without an answer does not vote. With n > k, cons@K and maj@K are the mean
over every k-subset of the n samples, or over :data:`MAX_SUBSETS` subsets drawn with
the seed when there are more (the notes say which).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sftlab.errors import UserError

#: The metric names of a sampled evaluation (groups: kind, k): ``pass@4``, ``cons@16``, ``maj@1``.
SAMPLED_METRIC = re.compile(r"(pass|cons|maj)@(\d+)")

MAX_SUBSETS = 1000
SAMPLED_TEMPERATURE = 0.8
SAMPLED_TOP_P = 0.95


@dataclass(frozen=True)
class Sampling:
    """How many samples per item and how they are drawn (validated)."""

    samples: int = 1
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None  # None: the evaluation's seed
    k: tuple[int, ...] | None = None  # None: default_ks(n)

    def __post_init__(self) -> None:
        problems = []
        if self.samples < 1:
            problems.append(f"samples must be >= 1, got {self.samples}")
        if self.temperature is not None and self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.k is not None and (not self.k or any(k < 1 for k in self.k)):
            problems.append(f"k must be a list of integers >= 1, got {list(self.k)}")
        if problems:
            raise UserError(problems)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Sampling:
        k = options.get("k")
        return cls(samples=int(options.get("samples", 1)),
                   temperature=_opt_float(options.get("temperature")),
                   top_p=_opt_float(options.get("top_p")),
                   seed=None if options.get("seed") is None else int(options["seed"]),
                   k=None if k is None else tuple(int(v) for v in k))

    def to_options(self) -> dict[str, Any]:
        """The task options that differ from the defaults."""
        out: dict[str, Any] = {}
        if self.samples != 1:
            out["samples"] = self.samples
        for key in ("temperature", "top_p", "seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.k is not None:
            out["k"] = list(self.k)
        return out

    @property
    def sampled(self) -> bool:
        return self.samples > 1 or bool(self.temperature)

    def resolved(self) -> tuple[float, float]:
        """(temperature, top_p) actually used."""
        if not self.sampled:
            return 0.0, 1.0
        t = SAMPLED_TEMPERATURE if self.temperature is None else self.temperature
        p = (SAMPLED_TOP_P if self.samples > 1 else 1.0) if self.top_p is None else self.top_p
        return t, p


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_ks(text: str, flag: str = "--k") -> tuple[int, ...]:
    """``"1,4,16"`` -> (1, 4, 16)."""
    try:
        ks = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError as err:
        raise UserError(f"{flag} {text!r}: write integers like 1,4,16") from err
    if not ks or ks[0] < 1:
        raise UserError(f"{flag} {text!r}: every k must be >= 1")
    return ks


def default_ks(n: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to n, and n itself."""
    return tuple(sorted({2 ** i for i in range(n.bit_length()) if 2 ** i <= n} | {n}))


def check_ks(ks: Sequence[int], counts: dict[str, int]) -> None:
    """Every k must be at most the samples of every scored item."""
    if not counts:
        return
    item, fewest = min(counts.items(), key=lambda kv: kv[1])
    too_big = [k for k in ks if k > fewest]
    if too_big:
        raise UserError(f"k={','.join(map(str, too_big))}: more than the {fewest} sample(s) of "
                        f"item {item} (every k must be <= the samples of every item)")


Matrix = list[list[bool]]


def sample_scores(
    correct: list[list[bool]] | list[None],
    ks: Sequence[int],
    *,
    answers: list[list[str | None]] | None = None,
    equivalence: Callable[[list[list[str | None]]], list[Matrix]] | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """``pass@K`` (and with ``answers``: ``maj@K``; with ``equivalence`` too: ``cons@K``)
    for every K, in percent, with ``<metric>_stderr``; and the per-item values.

    ``correct[i]`` is item i's per-sample correctness, None when it has no samples
    (it scores 0). ``answers[i]`` are its extracted answers (None: no answer);
    ``equivalence`` maps the answer lists of the items to their equivalence matrices.
    """
    from sftlab.evaluate.metrics import pass_at_k, vote_at_k
    from sftlab.evaluate.tasks.base import percent_metric

    present = [i for i, c in enumerate(correct) if c]
    per_item: list[dict[str, float]] = [{} for _ in correct]
    string_same: dict[int, Matrix] = {}
    mv_same: dict[int, Matrix] = {}
    if answers is not None:
        for i in present:
            a = answers[i]
            string_same[i] = [[x is not None and x == y for y in a] for x in a]
        if equivalence is not None:
            mv_same = dict(zip(present, equivalence([answers[i] for i in present]), strict=True))
    for i in present:
        c = correct[i]
        assert c is not None
        for k in ks:
            per_item[i][f"pass@{k}"] = pass_at_k(len(c), sum(c), k)
            valid = [a is not None for a in answers[i]] if answers is not None else None
            for name, same in (("maj", string_same.get(i)), ("cons", mv_same.get(i))):
                if same is not None:
                    per_item[i][f"{name}@{k}"] = vote_at_k(same, c, k, valid=valid,
                                                           max_subsets=MAX_SUBSETS, seed=seed)
    names = [f"{m}@{k}" for m in ("pass", "cons", "maj") for k in ks
             if present and f"{m}@{k}" in per_item[present[0]]]
    out: dict[str, float] = {}
    for name in names:
        out[name], out[f"{name}_stderr"] = percent_metric([v.get(name, 0.0) for v in per_item])
    return out, per_item


def subsets_note(n: int, ks: Sequence[int], seed: int) -> str:
    """How cons@K / maj@K were averaged, for the notes."""
    drawn = [k for k in ks if math.comb(n, k) > MAX_SUBSETS]
    text = f"cons@k/maj@k: mean over all k-subsets of the {n} samples"
    if drawn:
        text += (f" (k={','.join(map(str, drawn))}: over {MAX_SUBSETS} subsets drawn with "
                 f"seed {seed})")
    return text
