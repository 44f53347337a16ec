"""Metrics against known values, brute force and the real benchmark data."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from pathlib import Path

import pytest

from sftlab.evaluate.math_check import (
    MathResult,
    equivalence_matrix,
    equivalent,
    extract_boxed,
    verify_batch,
)
from sftlab.evaluate.metrics import (
    cluster,
    cons_at_k,
    gsm8k_extract,
    gsm8k_gold,
    gsm8k_match,
    maj_at_k,
    majority_index,
    mean_stderr,
    normalize_answer,
    normalize_number,
    nq_exact_match,
    nq_substring_match,
    pass_at_k,
    pass_at_k_stable,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------- pass@k


def _pass_at_k_brute(n: int, c: int, k: int) -> float:
    """Fraction of k-subsets of n samples (c correct) containing a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration_of_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = _pass_at_k_brute(n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
                assert pass_at_k_stable(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_known_values_and_large_n():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    # large n: exact integer binomials vs the stable product
    assert pass_at_k_stable(2000, 37, 100) == pytest.approx(pass_at_k(2000, 37, 100), rel=1e-9)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_mean_stderr_is_sample_std_over_sqrt_n():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert mean_stderr(values) == pytest.approx(statistics.stdev(values) / math.sqrt(6))
    assert math.isnan(mean_stderr([1.0]))


# ------------------------------------------------------------------------ GSM8K


def test_gsm8k_opencompass_extraction_and_match():
    out = "She pays 3 * 6 = 18 dollars.\nThe answer is 18.\n\nQuestion: next one 42"
    assert gsm8k_extract(out, "opencompass") == {"accuracy": "18"}
    assert gsm8k_extract("it is -2.5 now", "opencompass") == {"accuracy": "-2.5"}
    assert gsm8k_extract("no digits", "opencompass") == {"accuracy": None}
    # OpenCompass reads "1,234" as 234; sftlab's separator-tolerant reading (secondary) as 1234
    assert gsm8k_extract("in all 1,234.", "opencompass") == {"accuracy": "234"}
    assert gsm8k_extract("in all 1,234.", "opencompass", separators=True) == {"accuracy": "1234"}
    assert gsm8k_match("18", "reasoning\n#### 18")
    assert gsm8k_match("18.0", "18")  # float vs int comparison, as OpenCompass
    assert not gsm8k_match("17", "18") and not gsm8k_match(None, "18")


def test_gsm8k_lm_eval_strict_and_flexible():
    out = "Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = $18.\n#### 18\n\nQuestion: x"
    assert gsm8k_extract(out, "lm-eval") == {"strict-match": "18", "flexible-extract": "18"}
    loose = "So the total is $1,234."
    got = gsm8k_extract(loose, "lm-eval")
    assert got == {"strict-match": None, "flexible-extract": "$1,234."}
    assert gsm8k_match(got["flexible-extract"], "steps\n#### 1234", "lm-eval")
    assert not gsm8k_match("18.00", "#### 18", "lm-eval")  # lm-eval compares strings
    with pytest.raises(ValueError):
        gsm8k_extract(out, "helm")


def test_normalize_number():
    assert normalize_number("$1,234.50.") == "1234.5"
    assert normalize_number("18.0") == "18"
    assert normalize_number("-0.0") == "0"
    assert gsm8k_gold("a\nb\n#### 1,500") == "1500"


def test_gsm8k_gold_answers_replayed():
    rows = _jsonl(_shared("gsm8k_test.jsonl"))
    for fmt, key in (
        ("lm-eval", "strict-match"),
        ("lm-eval", "flexible-extract"),
    ):
        hits = [gsm8k_match(gsm8k_extract(r["answer"], fmt)[key], r["answer"], fmt) for r in rows]
        assert sum(hits) == len(rows), (fmt, key, hits.index(False))
    tolerant = [gsm8k_match(gsm8k_extract(r["answer"], separators=True)["accuracy"], r["answer"])
                for r in rows]
    assert all(tolerant)
    # OpenCompass's own reading fails the 14 gold answers with a thousands separator
    hits = [gsm8k_match(gsm8k_extract(r["answer"])["accuracy"], r["answer"]) for r in rows]
    assert len(rows) - sum(hits) == 14


# -------------------------------------------------------------------------- NQ


def test_normalize_answer_squad_style():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"


def test_nq_opencompass_substring_and_lm_eval_exact():
    golds = ["Eiffel Tower", "la tour Eiffel"]
    assert nq_substring_match(" The Eiffel Tower in Paris\nQ: next", golds)
    assert nq_substring_match("I think the answer is eiffel tower.", golds)
    assert not nq_substring_match("Louvre", golds)
    assert not nq_exact_match(" The Eiffel Tower in Paris", golds)
    assert nq_exact_match(" the Eiffel Tower", golds)
    assert nq_exact_match("Eiffel Tower!", golds)  # punctuation ignored
    assert not nq_exact_match("Eiffel-Tower", golds)  # "-" is removed, not a space
    assert not nq_exact_match("Eiffel", golds)


def test_nq_gold_answers_replayed_match_both_ways():
    rows = _jsonl(_shared("nq_open_dev.jsonl"))[:500]
    assert all(nq_exact_match(r["answer"][0], r["answer"]) for r in rows)
    assert all(nq_substring_match(r["answer"][0], r["answer"]) for r in rows)


# ------------------------------------------------------------- maj@k / cons@k


def test_cluster_and_majority_ties_go_to_first_seen():
    assert cluster(["a", "b", "a", "c", "b"]) == [[0, 2], [1, 4], [3]]
    assert majority_index(["b", "a", "a", "b"]) == 0  # 2-2 tie: "b" seen first
    same_value = lambda x, y: float(x) == float(y)  # noqa: E731
    assert majority_index(["1", "2", "2.0", "1.0", "2"], same_value) == 1


def test_maj_and_cons_at_k():
    answers = ["4", "5", "4", "6", "5", "5"]
    correct = [a == "5" for a in answers]
    assert maj_at_k(answers, correct, 3) == 0.0  # "4" wins among the first three
    assert maj_at_k(answers, correct, 6) == 1.0
    assert cons_at_k(answers, correct, 1) == pytest.approx(sum(correct) / len(correct))
    # brute force: majority over every 3-subset
    expected = statistics.mean(
        float(correct[s[majority_index([answers[i] for i in s])]])
        for s in itertools.combinations(range(6), 3)
    )
    assert cons_at_k(answers, correct, 3) == pytest.approx(expected)
    many = [str(random.Random(i).randint(0, 3)) for i in range(30)]
    sampled = cons_at_k(many, [a == "0" for a in many], 15, max_subsets=200)
    assert 0.0 <= sampled <= 1.0


# ------------------------------------------------------------------- Math-Verify


def test_extract_boxed():
    assert extract_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_boxed(r"\fbox{x^{2}}") == "x^{2}"
    assert extract_boxed(r"$\boxed 5$") == "5"
    assert extract_boxed(r"\boxed{unbalanced") is None
    assert extract_boxed("no box") is None


def test_verify_batch_outcomes():
    pairs = [
        (r"The answer is $\boxed{\frac{1}{2}}$.", r"so it is $\boxed{0.5}$"),
        (r"$\boxed{3}$", r"I think $\boxed{4}$"),
        (r"$\boxed{3}$", "I do not know"),
        (r"$\boxed{9}$", r"$\boxed{9^{9^{9^{9}}}}$"),  # sympy would run for ages
        (r"$\boxed{(1,2)}$", r"Final: $\boxed{(1, 2)}$"),
    ]
    results = verify_batch(pairs, timeout=2.0, workers=2)
    assert all(isinstance(r, MathResult) for r in results)
    assert [r.outcome for r in results] == ["ok", "ok", "parse_failure", "timeout", "ok"]
    assert [r.correct for r in results] == [True, False, False, False, True]
    assert results[0].gold_parsed and results[0].pred_parsed


def test_equivalence_checks_both_directions():
    assert equivalent("$x = 2$", "$2$") and equivalent("$2$", "$x = 2$")
    assert not equivalent("$3$", "$2$")
    matrix = equivalence_matrix([r"$\frac{1}{2}$", "0.5", "1/3"])
    assert matrix == [[True, True, False], [True, True, False], [False, False, True]]


def test_math_gold_solutions_replayed_score_at_least_99_percent():
    rows = _jsonl(_shared("math_test.jsonl"))
    sample = random.Random(0).sample(rows, 300)
    results = verify_batch([(r["solution"], r["solution"]) for r in sample])
    accuracy = sum(bool(r.correct) for r in results) / len(results)
    assert accuracy >= 0.99, [r for r in results if not r.correct][:5]


def test_math500_boxed_answers_match_gold_solutions():
    rows = _jsonl(_shared("math500_test.jsonl"))
    outputs = [f"Step by step... The final answer is $\\boxed{{{r['answer']}}}$." for r in rows]
    results = verify_batch([(r["solution"], o) for r, o in zip(rows, outputs, strict=True)])
    accuracy = sum(bool(r.correct) for r in results) / len(results)
    assert accuracy >= 0.99
