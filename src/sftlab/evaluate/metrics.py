"""Answer extraction and scoring functions, as the reference harnesses define them.

- pass@k: the unbiased estimator of Chen et al. (2021).
- stderr of a mean: as lm-evaluation-harness reports it (sample std / sqrt(n)).
- GSM8K: OpenCompass (``gsm8k_postprocess``: cut at "Question:", last number;
  ``Gsm8kEvaluator.is_equal``) and lm-eval (``gsm8k.yaml``: ``strict-match`` on
  ``#### N``, ``flexible-extract`` last number; exact match after removing ``,``, ``$``,
  everything up to ``#### `` and a final ``.``).
- NaturalQuestions: OpenCompass ``NQEvaluator`` (a normalised gold is a substring of
  the normalised first line of the prediction) and lm-eval ``nq_open.yaml`` (exact
  match, case and punctuation ignored, articles removed).
- maj@k / cons@k: cluster answers by an equivalence (e.g. Math-Verify both ways),
  take the largest cluster (ties: first seen) and score its first member.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import string
from collections.abc import Callable, Sequence

# ----------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed: ``1 - C(n-c,k)/C(n,k)``.

    Exact (integer binomials), so it is also the reference the stable form is
    tested against.
    """
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_stable(n: int, c: int, k: int) -> float:
    """The same estimator as a product, as in Chen et al.'s reference code:
    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``; no large binomials, float only."""
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _check_counts(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean as lm-eval reports it: sample standard deviation
    (n - 1) divided by sqrt(n); NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    variance = sum((x - mu) ** 2 for x in values) / (n - 1)
    return math.sqrt(variance) / math.sqrt(n)


# ------------------------------------------------------------------------ GSM8K

_OC_NUMBER = re.compile(r"\-?\d+\.\d+|\-?\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LM_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_LM_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_GSM8K_IGNORE = [",", r"\$", r"(?s).*#### ", r"\.$"]


def gsm8k_extract(text: str, format: str = "opencompass",
                  separators: bool = False) -> dict[str, str | None]:
    """The answer(s) a harness reads from a GSM8K output, keyed by its metric name.

    ``opencompass``: ``{"accuracy": last number before any "Question:"}``, exactly as
    OpenCompass's ``gsm8k_postprocess`` (so "1,234" reads as 234: OpenCompass scores 14
    of the 1,319 gold answers wrong for this reason); ``separators=True`` is sftlab's
    fix (thousands separators removed first), reported as a secondary metric;
    ``lm-eval``: ``{"strict-match": first "#### N", "flexible-extract": last number}``.
    None where nothing was found (OpenCompass's "NULL", lm-eval's "[invalid]").
    """
    if format == "opencompass":
        text = text.split("Question:")[0]
        if separators:
            text = _THOUSANDS.sub("", text)
        numbers = _OC_NUMBER.findall(text)
        return {"accuracy": numbers[-1] if numbers else None}
    if format == "lm-eval":
        return {
            "strict-match": _regex_pick(_LM_STRICT, text, 0),
            "flexible-extract": _regex_pick(_LM_FLEXIBLE, text, -1),
        }
    raise ValueError(f"unknown format {format!r} (expected 'opencompass' or 'lm-eval')")


def _regex_pick(pattern: re.Pattern, text: str, select: int) -> str | None:
    """lm-eval's RegexFilter: findall, pick a match, first non-empty group, strip."""
    matches = pattern.findall(text)
    if not matches:
        return None
    match = matches[select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), None)
    return match.strip() if match else None


def gsm8k_gold(answer: str) -> str:
    """The gold number of a GSM8K ``answer`` field (after ``#### ``, commas removed)."""
    return answer.split("#### ")[-1].strip().replace(",", "")


def normalize_number(text: str) -> str:
    """``"$1,234.50."`` -> ``"1234.5"``: drop ``$``, commas, a final period, trailing
    zeros after a decimal point (``"18.0"`` -> ``"18"``)."""
    text = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if re.fullmatch(r"-?\d+\.\d+", text):
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def gsm8k_match(extracted: str | None, gold: str, format: str = "opencompass") -> bool:
    """Whether an extracted answer equals the gold number, the way each harness
    compares. ``gold`` is the full answer field or the bare number."""
    if extracted is None:
        return False
    if format == "opencompass":
        refer = gsm8k_gold(gold)
        try:
            return extracted == refer or abs(float(extracted) - int(refer)) < 1e-6
        except ValueError:
            return False
    if format == "lm-eval":
        return _lm_exact_match(extracted, gold, _LM_GSM8K_IGNORE, punctuation=False)
    raise ValueError(f"unknown format {format!r} (expected 'opencompass' or 'lm-eval')")


def _lm_exact_match(pred: str, ref: str, ignore: Sequence[str], *, punctuation: bool) -> bool:
    """lm-eval's ``exact_match`` (HF evaluate): regexes removed, then lower case,
    then (optionally) punctuation removed, then string equality."""
    for pattern in ignore:
        pred, ref = re.sub(pattern, "", pred), re.sub(pattern, "", ref)
    pred, ref = pred.lower(), ref.lower()
    if punctuation:
        table = str.maketrans("", "", string.punctuation)
        pred, ref = pred.translate(table), ref.translate(table)
    return pred == ref


# -------------------------------------------------------------------------- NQ

_LM_NQ_IGNORE = [r"\b(?:The |the |An |A |The |a |an )"]


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _oc_general_postprocess(text: str) -> str:
    """OpenCompass ``general_postprocess``: cut at the first newline, period or comma;
    drop punctuation and articles; collapse spaces."""
    text = re.split(r"[\n.,]", text, maxsplit=1)[0]
    text = re.sub(r"[^\w\s]", "", text)
    text = re.sub(r"\b(a|an|the)\b", "", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).strip()


def nq_substring_match(pred: str, golds: Sequence[str]) -> bool:
    """OpenCompass NQ: some normalised gold is a substring of the normalised
    prediction (first line, lower case, after "answer is" when present)."""
    pred = pred.strip().split("\n")[0].lower()
    if "answer is" in pred:
        pred = pred.split("answer is")[-1]
    pred = _oc_general_postprocess(pred)
    return any(_oc_general_postprocess(g).lower() in pred for g in golds)


def nq_exact_match(pred: str, golds: Sequence[str]) -> bool:
    """lm-eval ``nq_open``: leading whitespace removed, then exact match against any
    gold ignoring case, punctuation and articles."""
    pred = pred.lstrip()
    return any(_lm_exact_match(pred, g, _LM_NQ_IGNORE, punctuation=True) for g in golds)


# ------------------------------------------------------------- maj@k / cons@k

Equivalence = Callable[[str, str], bool]


def cluster(answers: Sequence[str], equiv: Equivalence = str.__eq__) -> list[list[int]]:
    """Group answer indices: each joins the first cluster whose first member it is
    equivalent to, else starts a new one. Clusters in order of first appearance."""
    clusters: list[list[int]] = []
    for i, answer in enumerate(answers):
        for members in clusters:
            if equiv(answers[members[0]], answer):
                members.append(i)
                break
        else:
            clusters.append([i])
    return clusters


def majority_index(answers: Sequence[str], equiv: Equivalence = str.__eq__) -> int:
    """Index of the representative answer: first member of the largest cluster
    (ties go to the cluster seen first)."""
    if not answers:
        raise ValueError("majority vote over no answers")
    clusters = cluster(answers, equiv)
    best = max(clusters, key=len)  # max keeps the first of equal sizes
    return best[0]


def maj_at_k(
    answers: Sequence[str], correct: Sequence[bool], k: int, equiv: Equivalence = str.__eq__
) -> float:
    """maj@k on the first ``k`` samples: 1.0 when the majority answer is correct."""
    if not 1 <= k <= len(answers) or len(answers) != len(correct):
        raise ValueError(f"maj@{k} needs k <= samples and one correctness per answer")
    return float(bool(correct[majority_index(answers[:k], equiv)]))


def cons_at_k(
    answers: Sequence[str],
    correct: Sequence[bool],
    k: int,
    equiv: Equivalence = str.__eq__,
    *,
    max_subsets: int = 10_000,
    seed: int = 0,
) -> float:
    """cons@k from n >= k samples: mean of maj@k over every k-subset (in sample
    order); when there are more than ``max_subsets`` subsets, over that many drawn
    with ``seed``. Equivalence is computed once per pair. cons@1 == pass@1."""
    n = len(answers)
    if not 1 <= k <= n or n != len(correct):
        raise ValueError(f"cons@{k} needs k <= samples and one correctness per answer")
    same = [[i == j for j in range(n)] for i in range(n)]
    for i, j in itertools.combinations(range(n), 2):  # cluster() asks equiv(earlier, later)
        same[i][j] = same[j][i] = bool(equiv(answers[i], answers[j]))
    return vote_at_k(same, correct, k, max_subsets=max_subsets, seed=seed)


def vote_at_k(
    same: Sequence[Sequence[bool]],
    correct: Sequence[bool],
    k: int,
    *,
    valid: Sequence[bool] | None = None,
    max_subsets: int = 10_000,
    seed: int = 0,
) -> float:
    """Majority-vote accuracy of k of n samples, from their equivalence matrix
    (``same[i][j]``: samples i and j give the same answer; symmetric).

    In each k-subset (in sample order) the samples are clustered greedily
    (:func:`cluster`), the largest cluster wins (ties: the one seen first) and the
    subset scores ``correct`` of its first member. Samples with ``valid`` False (no
    answer) do not vote; a subset with no vote scores 0. The result is the mean over
    every k-subset, or over ``max_subsets`` subsets drawn with ``seed`` when there are
    more (:func:`vote_subsets`).
    """
    n = len(correct)
    if not 1 <= k <= n or len(same) != n:
        raise ValueError(f"vote@{k} needs 1 <= k <= samples and an n x n matrix")
    valid = [True] * n if valid is None else list(valid)

    def index_equiv(a: str, b: str) -> bool:
        return same[int(a)][int(b)]

    subsets = vote_subsets(n, k, max_subsets=max_subsets, seed=seed)
    total = 0.0
    for subset in subsets:
        voters = [i for i in subset if valid[i]]
        if voters:
            rep = majority_index([str(i) for i in voters], index_equiv)
            total += bool(correct[voters[rep]])
    return total / len(subsets)


def vote_subsets(n: int, k: int, *, max_subsets: int = 10_000,
                 seed: int = 0) -> Sequence[tuple[int, ...]]:
    """The k-subsets of n samples a vote is averaged over: all of them when there are
    at most ``max_subsets``, else ``max_subsets`` drawn uniformly with ``seed``."""
    if math.comb(n, k) <= max_subsets:
        return list(itertools.combinations(range(n), k))
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(range(n), k))) for _ in range(max_subsets)]
