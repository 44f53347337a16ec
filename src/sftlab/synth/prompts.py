"""The three requests of a synthetic row (write, judge, re-solve) and how answers are read.

- The generator gets the spec's ``prompt`` rendered over one condition, followed by
  :data:`FORMAT_NOTE` (the JSON keys it must answer with) and, when the endpoint has
  ``structured_output``, a ``response_format`` JSON schema with the same keys. Its
  answer is parsed as JSON in any case (code fences and text around one object are
  tolerated); :func:`parse_row` returns None for anything else.
- The judge gets :data:`RUBRIC` (ours): is the problem well-posed, is the stated
  answer consistent with it, a 1-10 score, as JSON; :func:`parse_verdict` reads the
  score from the JSON, else from ``score: N`` / ``[[N]]`` in the text.
- Each re-solver gets :data:`SOLVE` (step by step, final answer in ``\\boxed{}``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sftlab.synth.spec import OutputFields

Messages = list[dict[str, str]]

FORMAT_NOTE = ("\n\nReply with only a JSON object with the string keys {keys}: {roles}. "
               "Put the final answer alone (no words, no \\boxed) under \"{answer}\".")
RUBRIC_SYSTEM = "You review math problems written for a training set. You are strict."
RUBRIC = """Review this math problem and its stated answer.

Problem:
{problem}

Stated answer:
{answer}

Check two things: (1) the problem is well-posed: self-contained, unambiguous and solvable, \
with a single answer; (2) the stated answer is consistent with the problem: it answers what \
is asked and is correct.
Score the pair from 1 (unusable) to 10 (well-posed and the answer certainly correct).
Reply with only a JSON object: {{"well_posed": true or false, "answer_consistent": true or \
false, "score": an integer from 1 to 10, "reason": "one sentence"}}."""
SOLVE = """Solve the following problem. Reason step by step, then give the final answer \
in \\boxed{{}}.

{problem}"""
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"well_posed": {"type": "boolean"}, "answer_consistent": {"type": "boolean"},
                   "score": {"type": "integer", "minimum": 1, "maximum": 10},
                   "reason": {"type": "string"}},
    "required": ["well_posed", "answer_consistent", "score", "reason"],
    "additionalProperties": False,
}


def generation_messages(prompt: str, condition: dict[str, Any], fields: OutputFields) -> Messages:
    """The generator's request for one condition."""
    keys = [fields.problem, fields.reasoning, fields.answer]
    roles = (f'"{fields.problem}" (the problem statement), "{fields.reasoning}" '
             f'(a step-by-step solution), "{fields.answer}" (the final answer)')
    note = FORMAT_NOTE.format(keys=", ".join(f'"{k}"' for k in keys), roles=roles,
                              answer=fields.answer)
    text = prompt.format_map({k: str(v) for k, v in condition.items()}) + note
    return [{"role": "user", "content": text}]


def row_schema(fields: OutputFields) -> dict[str, Any]:
    """``response_format`` asking for the three keys (OpenAI / vLLM structured output)."""
    keys = [fields.problem, fields.reasoning, fields.answer]
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in keys},
              "required": keys, "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "synthetic_problem", "strict": True,
                                                   "schema": schema}}


def verdict_format() -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True,
                                                   "schema": VERDICT_SCHEMA}}


def judge_messages(problem: str, answer: str) -> Messages:
    return [{"role": "system", "content": RUBRIC_SYSTEM},
            {"role": "user", "content": RUBRIC.format(problem=problem, answer=answer)}]


def solve_messages(problem: str) -> Messages:
    return [{"role": "user", "content": SOLVE.format(problem=problem)}]


# --- reading answers ----------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def json_object(text: str) -> dict | None:
    """The JSON object in ``text``: all of it, inside a code fence, or the first object
    that decodes; None when there is none."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


@dataclass(frozen=True)
class Parsed:
    problem: str
    reasoning: str
    answer: str


def parse_row(text: str, fields: OutputFields) -> Parsed | None:
    """The three fields of a generator answer; None when it is not a JSON object holding
    them as non-empty text (a number is accepted as the answer)."""
    obj = json_object(text)
    if obj is None:
        return None
    values = []
    for key in (fields.problem, fields.reasoning, fields.answer):
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        value = str(value).strip()
        if not value:
            return None
        values.append(value)
    return Parsed(values[0], values[1], clean_answer(values[2]))


def clean_answer(answer: str) -> str:
    """The stated answer without ``\\boxed{}`` or ``$`` around it."""
    from sftlab.evaluate.math_check import extract_boxed

    inner = extract_boxed(answer) if "\\boxed" in answer else None
    answer = (inner or answer).strip()
    if len(answer) > 1 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    return answer


_SCORE = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]|\bscore\"?\s*[:=]\s*\"?(\d+(?:\.\d+)?)", re.I)


@dataclass(frozen=True)
class Verdict:
    score: float | None  # None: no score could be read
    well_posed: bool | None = None
    answer_consistent: bool | None = None
    reason: str | None = None


def parse_verdict(text: str) -> Verdict:
    """The judge's score (1-10) and flags; a score outside 1-10 counts as unreadable."""
    obj = json_object(text)
    score = None
    if obj is not None and isinstance(obj.get("score"), int | float) \
            and not isinstance(obj.get("score"), bool):
        score = float(obj["score"])
    if score is None:
        match = _SCORE.search(text)
        if match:
            score = float(match.group(1) or match.group(2))
    if score is not None and not 1 <= score <= 10:
        score = None
    if obj is None:
        return Verdict(score)
    flags = [obj.get(k) if isinstance(obj.get(k), bool) else None
             for k in ("well_posed", "answer_consistent")]
    reason = obj.get("reason") if isinstance(obj.get("reason"), str) else None
    return Verdict(score, flags[0], flags[1], reason)


def response_text(parsed: Parsed) -> str:
    """The training response: the reasoning, then the answer in ``\\boxed{}``."""
    return f"{parsed.reasoning.rstrip()}\n\nThe answer is $\\boxed{{{parsed.answer}}}$."
