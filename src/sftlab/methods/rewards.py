"""Verifiable rewards for ``type: grpo`` (``methods.<name>.rewards``: name -> weight).

- ``math_verify``: 1 when the completion's answer equals the gold answer by Math-Verify,
  else 0. Checks run in the project's worker processes with an outer timeout
  (:mod:`sftlab.evaluate.math_check`); a check that times out, crashes or cannot parse
  the gold answer scores 0 and is counted in ``failures`` (never an exception).
- ``format``: 1 when the completion puts a final answer in ``\\boxed{}``, else 0.

Gold answers: a GSM8K answer (rationale, then ``#### 72``) counts by what follows
``####``; an answer without ``\\boxed{}`` is boxed (``72`` -> ``\\boxed{72}``) so
Math-Verify reads it as the final answer; a MATH solution is used as it is.

Each reward is a callable with TRL's reward-function signature
(``prompts``, ``completions``, dataset columns as keyword lists, here ``answer``).
"""

from __future__ import annotations

from collections import Counter

from sftlab.evaluate.math_check import extract_boxed, verify_batch

REWARDS = ("math_verify", "format")


def gold_answer(answer: str) -> str:
    """The gold answer as Math-Verify should read it (see the module docstring)."""
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return answer if "\\boxed" in answer else f"\\boxed{{{answer.strip()}}}"


def _text(completion) -> str:
    """A completion as text (conversational completions are lists of messages)."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


class MathVerifyReward:
    """``math_verify``: 1.0 for a correct final answer, else 0.0; failed checks counted."""

    __name__ = "math_verify"

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self.failures: Counter[str] = Counter()  # outcome -> checks scored 0 for it
        self.checks = 0

    def __call__(self, prompts, completions, answer, **_) -> list[float]:
        pairs = [(gold_answer(a), _text(c)) for a, c in zip(answer, completions, strict=True)]
        try:
            results = verify_batch(pairs, timeout=self.timeout)
        except Exception:  # noqa: BLE001 - the pool itself failed: every check scores 0
            self.checks += len(pairs)
            self.failures["error"] += len(pairs)
            return [0.0] * len(pairs)
        self.checks += len(results)
        for r in results:
            if r.outcome in ("timeout", "error") or r.correct is None:
                self.failures[r.outcome if r.outcome != "ok" else "undecided"] += 1
        return [1.0 if r.correct else 0.0 for r in results]


class FormatReward:
    """``format``: 1.0 when the completion has a final answer in ``\\boxed{}``."""

    __name__ = "format"

    def __call__(self, prompts, completions, **_) -> list[float]:
        return [0.0 if extract_boxed(_text(c)) in (None, "") else 1.0 for c in completions]


def build(names: list[str], *, timeout: float) -> list:
    """The reward callables for ``names`` (each one of :data:`REWARDS`), in order."""
    made = {"math_verify": lambda: MathVerifyReward(timeout), "format": FormatReward}
    return [made[n]() for n in names]
