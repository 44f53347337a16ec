"""Embedded RL prompts: one-step arithmetic with exact answers (``type: grpo`` learning).

``arithmetic_rl.jsonl`` (written with the other embedded files,
:mod:`sftlab.data.embedded`) holds ``prompt, answer`` rows, the grpo default ``fields``:
``'What is 7 + 5? End your reply with "The answer is" and the number.'`` with the gold
``"12"``. Sums and differences of numbers below 20 and products of numbers below 10, no
negative results; every pair once, in a seeded order (byte-identical on every run).

The answer goes after a marker (``answer_marker: "The answer is"``), not in
``\\boxed{}``: sampled at temperature 1, SmolLM2-135M-Instruct boxed none of 16 answers
when asked to, but ended 5 of 16 with the marker and got 4 right, so GRPO's groups have
rewards to compare from the first step (``examples/grpo_arithmetic.yaml``).
"""

from __future__ import annotations

import random
from typing import Any

Row = dict[str, Any]

INSTRUCTION = 'What is {a} {op} {b}? End your reply with "The answer is" and the number.'
SEED = 14


def arithmetic_rows(seed: int = SEED) -> list[Row]:
    """Every pair's question and exact answer, shuffled by ``seed``."""
    pairs = [(a, "+", b, a + b) for a in range(1, 20) for b in range(1, 20)]
    pairs += [(a, "-", b, a - b) for a in range(1, 20) for b in range(1, a + 1)]
    pairs += [(a, "*", b, a * b) for a in range(2, 10) for b in range(2, 10)]
    random.Random(seed).shuffle(pairs)
    return [{"prompt": INSTRUCTION.format(a=a, op=op, b=b), "answer": str(result)}
            for a, op, b, result in pairs]


def arithmetic_splits() -> dict[str, list[Row]]:
    return {"arithmetic_rl": arithmetic_rows()}
