"""Verifiable rewards for ``type: grpo`` (``methods.<name>.rewards``: name -> weight).

- ``math_verify``: 1 when the completion's answer equals the gold answer by Math-Verify,
  else 0. Checks run in the project's worker processes with an outer timeout
  (:mod:`sftlab.evaluate.math_check`); a check that times out, crashes or cannot parse
  the gold answer scores 0 and is counted in ``failures`` (never an exception).
- ``format``: 1 when the completion puts a final answer in ``\\boxed{}`` or, with the
  method's ``answer_marker`` (``"####"``, ``"The answer is"``), after the marker on its
  line; else 0.

With an answer marker, Math-Verify checks the completion's final answer, boxed: the
text after the marker when the marker comes after the last ``\\boxed{}`` (``The
answer is 72.`` -> ``\\boxed{72}``), else the last ``\\boxed{}``'s content
(:func:`sftlab.evaluate.math_check.final_answer`). Without a marker, or when the
completion has neither, it goes to Math-Verify as it is (its last ``\\boxed{}``, else
its last expression).

Gold answers: a GSM8K answer (rationale, then ``#### 72``) counts by what follows
``####`` (or the method's marker); an answer without ``\\boxed{}`` is boxed (``72`` ->
``\\boxed{72}``) so Math-Verify reads it as the final answer; a MATH solution is used
as it is.

Each reward is a callable with TRL's reward-function signature
(``prompts``, ``completions``, dataset columns as keyword lists, here ``answer``).
"""

from __future__ import annotations

from collections import Counter

from sftlab.evaluate.math_check import extract_marked, final_answer, verify_batch

REWARDS = ("math_verify", "format")


def gold_answer(answer: str, marker: str | None = None) -> str:
    """The gold answer as Math-Verify should read it (see the module docstring)."""
    for mark in dict.fromkeys(m for m in ("####", marker) if m):
        if (marked := extract_marked(answer, mark)) is not None:
            answer = marked.replace(",", "")
            break
    return answer if "\\boxed" in answer else f"\\boxed{{{answer.strip()}}}"


def prediction(completion: str, marker: str | None) -> str:
    """What Math-Verify checks of a completion (see the module docstring)."""
    if marker and (answer := final_answer(completion, marker)) is not None:
        return f"\\boxed{{{answer}}}"
    return completion


def _text(completion) -> str:
    """A completion as text (conversational completions are lists of messages)."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


class MathVerifyReward:
    """``math_verify``: 1.0 for a correct final answer, else 0.0; failed checks counted."""

    __name__ = "math_verify"

    def __init__(self, timeout: float = 5.0, marker: str | None = None):
        self.timeout = timeout
        self.marker = marker
        self.failures: Counter[str] = Counter()  # outcome -> checks scored 0 for it
        self.checks = 0

    def __call__(self, prompts, completions, answer, **_) -> list[float]:
        pairs = [(gold_answer(a, self.marker), prediction(_text(c), self.marker))
                 for a, c in zip(answer, completions, strict=True)]
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
    """``format``: 1.0 when the completion has a final answer in ``\\boxed{}`` or after
    the answer marker."""

    __name__ = "format"

    def __init__(self, marker: str | None = None):
        self.marker = marker

    def __call__(self, prompts, completions, **_) -> list[float]:
        return [0.0 if final_answer(_text(c), self.marker) is None else 1.0 for c in completions]


def build(names: list[str], *, timeout: float, marker: str | None = None) -> list:
    """The reward callables for ``names`` (each one of :data:`REWARDS`), in order;
    ``marker``: the method's ``answer_marker``."""
    made = {"math_verify": lambda: MathVerifyReward(timeout, marker),
            "format": lambda: FormatReward(marker)}
    return [made[n]() for n in names]
