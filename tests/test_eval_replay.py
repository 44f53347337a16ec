"""Acceptance on real data (``../shared/data``): replayed references score as they must."""

from __future__ import annotations

import json
import random

import pytest

from sftlab.evaluate.runner import TaskRequest, score_predictions

pytestmark = pytest.mark.shared_data


def write_preds(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_humaneval_canonical_solutions_pass(shared_data, tmp_path):
    rows = load(shared_data / "humaneval.jsonl")
    preds = write_preds(tmp_path / "p.jsonl",
                        [{"id": r["task_id"], "output": r["canonical_solution"]} for r in rows])
    res = score_predictions(TaskRequest("humaneval", 0, "lm-eval", str(shared_data)), preds)
    assert res.n == 164 and res.value == 100.0, res.outcomes


@pytest.mark.slow
def test_mbpp_reference_code_passes(shared_data, tmp_path):
    rows = [r for r in load(shared_data / "mbpp.jsonl") if 11 <= r["task_id"] <= 510]
    preds = write_preds(tmp_path / "p.jsonl", [{"id": r["task_id"], "output": r["code"]} for r in rows])
    res = score_predictions(TaskRequest("mbpp", 3, "lm-eval", str(shared_data / "mbpp.jsonl")),
                            preds)
    assert res.n == 500 and res.value >= 99.0, res.outcomes
    # OpenCompass 0.5.4 (type-aware asserts, no test_setup_code) fails 15 reference solutions
    # (14 on 1 == 1.0-style comparisons, task 367 on its missing setup code); its own code,
    # run on the same programs, gives the same 15 verdicts
    res = score_predictions(TaskRequest("mbpp", 3, "opencompass", str(shared_data / "mbpp.jsonl")),
                            preds)
    assert res.n == 500 and res.value == 97.0, res.outcomes


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
def test_gsm8k_gold_answers_score_100(shared_data, tmp_path, fmt):
    rows = load(shared_data / "gsm8k_test.jsonl")
    preds = write_preds(tmp_path / "p.jsonl",
                        [{"id": i, "output": r["answer"]} for i, r in enumerate(rows)])
    res = score_predictions(TaskRequest("gsm8k", 0, fmt, str(shared_data)), preds)
    if fmt == "opencompass":  # OpenCompass reads "#### 1,234" as 234: 14 gold answers fail
        assert res.n == 1319 and res.value == pytest.approx(100 * 1305 / 1319)
        assert res.extra["separator_tolerant"] == 100.0
        return
    assert res.n == 1319 and res.value == 100.0


def test_math_gold_solutions_score_at_least_99(shared_data, tmp_path):
    rows = load(shared_data / "math500_test.jsonl")
    sample = random.Random(0).sample(rows, 200)
    preds = write_preds(tmp_path / "p.jsonl",
                        [{"id": r["unique_id"], "output": r["solution"]} for r in sample])
    data = tmp_path / "math500_test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sample))
    res = score_predictions(TaskRequest("math", 0, "opencompass", str(data)), preds)
    assert res.n == 200 and res.value >= 99.0, res.outcomes
