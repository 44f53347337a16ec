"""MT-Bench (``--task mt_bench``): 80 two-turn questions graded 1-10 by a judge model.

Follows FastChat's ``llm_judge``:

- questions in FastChat's ``question.jsonl`` shape (``question_id``, ``category``,
  ``turns`` [2]); reference answers in its ``reference_answer/<model>.jsonl`` shape
  (``question_id``, ``choices[0].turns``) or a question's own ``reference`` list;
- answers generated turn by turn (turn 2 sees turn 1 and its answer) with FastChat's
  per-category temperatures (0 = greedy);
- single-answer grading: ``single-v1`` / ``single-v1-multi-turn``, and for math,
  reasoning and coding ``single-math-v1`` / ``single-math-v1-multi-turn`` with the
  reference answers; the judge at temperature 0; turn 1 and turn 2 graded separately;
- rating ``[[x]]``, fallback ``[x]`` (first match). A judgment without a rating in
  1-10 is *missing*: counted, never scored as 0.

Options (``ctx.options``): ``judge`` (dict, see :func:`~sftlab.evaluate.judge.judge_from_options`),
``judge_cache``, ``judge_prompts`` (a ``judge_prompts.jsonl`` path; default: sftlab's
own prompts), ``references`` (path), ``max_new_tokens`` (default 1024).

Data (``ctx.data``): a ``question.jsonl`` file, or a folder holding one file whose name
contains ``question`` (and optionally one containing ``reference``, or FastChat's
``reference_answer/gpt-4.jsonl``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from sftlab import jsonio
from sftlab.errors import UserError
from sftlab.evaluate.backends.base import GenerateRequest
from sftlab.evaluate.judge import JudgeClient, judge_from_options
from sftlab.evaluate.tasks.base import (
    TaskContext,
    TaskOutput,
    count_outcomes,
    prompt_hash,
)
from sftlab.evaluate.tasks.judged import JudgedTask
from sftlab.serve.conversation import render_with_template

log = logging.getLogger(__name__)

TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
NEED_REF = ("math", "reasoning", "coding")
DEFAULT_CHAT_TEMPLATE = "### User:\n{instruction}\n\n### Assistant:\n{response}"
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass
class Question:
    id: str
    category: str
    turns: list[str]
    references: list[str] | None = None


def parse_rating(judgment: str | None) -> float | None:
    """The judge's rating: first ``[[x]]``, else first ``[x]``; None when absent or not in 1-10."""
    if not judgment:
        return None
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    if not match:
        return None
    rating = float(match.group(1))
    return rating if 1.0 <= rating <= 10.0 else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in jsonio.lines(path.read_text(encoding="utf-8"))
                if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read JSONL: {err}", where=str(path)) from None


def load_judge_prompts(path: str | Path | None, default: str = "mt_bench.jsonl",
                       merge: bool = False) -> dict[str, dict[str, Any]]:
    """Judge prompts by name from a ``judge_prompts.jsonl`` (default: sftlab's own
    ``resources/judge_prompts/<default>``). With ``merge`` the file's prompts replace the
    defaults of the same name and the rest stay (FastChat's ``judge_ja_prompts.jsonl``
    has no multi-turn prompts)."""
    text = resources.files("sftlab.resources").joinpath(f"judge_prompts/{default}")
    builtin = [json.loads(line) for line in jsonio.lines(text.read_text(encoding="utf-8")) if line]
    if path is None:
        rows = builtin
    else:
        rows = (builtin if merge else []) + _read_jsonl(Path(path))
    return {row["name"]: row for row in rows}


def _find(folder: Path, word: str) -> Path | None:
    hits = sorted(p for p in folder.glob("*.jsonl") if word in p.name.lower())
    if len(hits) > 1:
        raise UserError(f"several files could hold the MT-Bench {word}s: "
                        f"{', '.join(p.name for p in hits)}; point at one file", where=str(folder))
    return hits[0] if hits else None


def load_questions(data: str | None, references: str | None = None) -> list[Question]:
    """Questions (with reference answers where available) from a file or a folder."""
    if data is None:
        raise UserError("mt_bench needs its questions: --data path/to/question.jsonl "
                        "(FastChat's shape) or a folder holding it")
    path = Path(data)
    ref_path = Path(references) if references else None
    if path.is_dir():
        folder = path
        path = _find(folder, "question") or folder / "question.jsonl"
        if ref_path is None:
            fastchat = folder / "reference_answer" / "gpt-4.jsonl"
            ref_path = fastchat if fastchat.exists() else _find(folder, "reference")
    if not path.exists():
        raise UserError("no MT-Bench question file here", where=str(path))
    refs = {}
    if ref_path is not None:
        refs = {str(r["question_id"]): r["choices"][0]["turns"] for r in _read_jsonl(ref_path)}
    questions = []
    for i, row in enumerate(_read_jsonl(path)):
        missing = [k for k in ("question_id", "category", "turns") if k not in row]
        if missing:
            raise UserError(f"line {i + 1}: missing {', '.join(missing)}", where=str(path))
        qid = str(row["question_id"])
        questions.append(Question(qid, row["category"], list(row["turns"]),
                                  refs.get(qid) or row.get("reference")))
    return questions


def _stops(template: str) -> tuple[str, ...]:
    head = template.split("{instruction}")[0].strip()
    return (head,) if head else ()


def generate_answers(backend: Any, questions: list[Question], template: str, max_new_tokens: int,
                     seed: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(answers by question id, prompts by item id ``<qid>/turn<t>``), generated turn by
    turn: every question's turn-2 prompt holds its turn-1 answer."""
    answers: dict[str, list[str]] = {q.id: [] for q in questions}
    prompts: dict[str, str] = {}
    for turn in range(max(len(q.turns) for q in questions)):
        asked = [q for q in questions if turn < len(q.turns)]
        requests = []
        for q in asked:
            messages = []
            for k in range(turn):
                messages += [{"role": "user", "content": q.turns[k]},
                             {"role": "assistant", "content": answers[q.id][k]}]
            messages.append({"role": "user", "content": q.turns[turn]})
            prompts[f"{q.id}/turn{turn + 1}"] = render_with_template(template, messages)
            requests.append(GenerateRequest(
                prompt=prompts[f"{q.id}/turn{turn + 1}"], stop=_stops(template),
                max_new_tokens=max_new_tokens, temperature=TEMPERATURE.get(q.category, 0.7),
                seed=seed))
        for q, result in zip(asked, backend.generate(requests), strict=True):
            answers[q.id].append(result.texts[0].strip())
    return answers, prompts


def judge_request(q: Question, answers: list[str], turn: int,
                  prompts: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """(prompt name, chat messages) asking the judge to grade ``turn`` (1 or 2)."""
    with_ref = q.category in NEED_REF and q.references is not None and len(q.references) >= turn
    name = ("single-math-v1" if with_ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
    fields: dict[str, str] = {}
    if with_ref:
        fields.update({f"ref_answer_{k + 1}": r for k, r in enumerate(q.references[:2])})
    if turn == 1:
        fields.update(question=q.turns[0], answer=answers[0])
    else:
        fields.update(question_1=q.turns[0], question_2=q.turns[1], answer_1=answers[0],
                      answer_2=answers[1])
    prompt = prompts[name]
    return name, [{"role": "system", "content": prompt["system_prompt"]},
                  {"role": "user", "content": prompt["prompt_template"].format(**fields)}]


def grade(questions: list[Question], answers: dict[str, list[str]], judge: JudgeClient,
          prompts: dict[str, dict[str, Any]], model_prompts: dict[str, str]) -> list[dict[str, Any]]:
    """One prediction row per (question, turn)."""
    keys, requests = [], []
    for q in questions:
        for turn in range(1, len(q.turns) + 1):
            name, messages = judge_request(q, answers[q.id], turn, prompts)
            keys.append((q, turn, name))
            requests.append(messages)
    rows = []
    for (q, turn, name), judgment in zip(keys, judge.judge_many(requests), strict=True):
        rating = parse_rating(judgment.text)
        outcome = "rated" if rating is not None else (
            "missing" if judgment.text is not None else "error")
        item_id = f"{q.id}/turn{turn}"
        prompt = model_prompts.get(item_id, "")
        rows.append({"item_id": item_id, "prompt_hash": prompt_hash(prompt), "prompt": prompt,
                     "output": answers[q.id][turn - 1], "extracted": rating, "correct": None,
                     "score": rating, "outcome": outcome, "category": q.category, "turn": turn,
                     "judge_prompt": name, "judgment": judgment.text,
                     "judge_error": judgment.error})
    return rows


def _mean(values: list[float]) -> float:
    return mean(values) if values else math.nan


def summarize(rows: list[dict[str, Any]]) -> tuple[float, float, dict[str, Any]]:
    """(overall mean rating, its standard error, extra metrics: per turn, per category, missing)."""
    rated = [r for r in rows if r["score"] is not None]
    scores = [r["score"] for r in rated]
    se = stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else math.nan
    extra: dict[str, Any] = {"n_missing": len(rows) - len(rated), "n_judgments": len(rows)}
    for turn in sorted({r["turn"] for r in rows}):
        extra[f"turn_{turn}"] = _mean([r["score"] for r in rated if r["turn"] == turn])
    for cat in sorted({r["category"] for r in rows}):
        extra[f"category_{cat}"] = _mean([r["score"] for r in rated if r["category"] == cat])
    return _mean(scores), se, extra


class MTBench(JudgedTask):
    """MT-Bench; ``prompts`` names the built-in judge prompts (``ja_mt_bench``: Japanese
    ones, with a user's ``--judge-prompts`` file merged over them)."""

    def __init__(self, prompts: str = "mt_bench.jsonl", merge_prompts: bool = False):
        self.prompts_resource, self.merge_prompts = prompts, merge_prompts
    def preflight(self, ctx: TaskContext) -> None:
        """Settings, judge options, questions, references and judge prompts (no model, no
        judge contacted)."""
        self._load(ctx)

    def _setup(self, ctx: TaskContext) -> tuple[list[Question], dict, JudgeClient]:
        questions, prompts = self._load(ctx)
        return questions, prompts, judge_from_options(ctx.options)

    def _load(self, ctx: TaskContext) -> tuple[list[Question], dict]:
        cached = getattr(self, "_loaded", None)
        if cached is not None and cached[0] is ctx:
            return cached[1]
        self.check(ctx)
        questions = load_questions(ctx.data, ctx.options.get("references"))[: ctx.limit]
        prompts = load_judge_prompts(ctx.options.get("judge_prompts"), self.prompts_resource,
                                     self.merge_prompts)
        needed = {"single-v1", "single-v1-multi-turn", "single-math-v1",
                  "single-math-v1-multi-turn"}
        if needed - set(prompts):
            raise UserError(f"judge prompts lack {', '.join(sorted(needed - set(prompts)))}",
                            where=str(ctx.options.get("judge_prompts")))
        no_ref = [q.id for q in questions if q.category in NEED_REF and not q.references]
        if no_ref:
            log.warning("mt_bench: %d math/reasoning/coding questions have no reference answer "
                        "and are graded without one: %s", len(no_ref), ", ".join(no_ref[:10]))
        self._loaded = (ctx, (questions, prompts))
        return questions, prompts

    def run(self, backend: Any, ctx: TaskContext) -> TaskOutput:
        questions, prompts, judge = self._setup(ctx)
        template = ctx.template or DEFAULT_CHAT_TEMPLATE
        max_new = int(ctx.options.get("max_new_tokens", 1024))
        answers, model_prompts = generate_answers(backend, questions, template, max_new, ctx.seed)
        with judge:
            rows = grade(questions, answers, judge, prompts, model_prompts)
        return self._output(rows, judge, ctx, template=template, max_new_tokens=max_new)

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        questions, prompts, judge = self._setup(ctx)
        answers = {}
        for q in questions:
            keys = [f"{q.id}/turn{t}" for t in range(1, len(q.turns) + 1)]
            lacking = [k for k in keys if not outputs.get(k)]
            if lacking:
                raise UserError(f"mt_bench: no output for {', '.join(lacking[:5])}")
            answers[q.id] = [outputs[k][0].strip() for k in keys]
        with judge:
            rows = grade(questions, answers, judge, prompts, {})
        return self._output(rows, judge, ctx, template=ctx.template, max_new_tokens=None)

    def _output(self, rows: list[dict], judge: JudgeClient, ctx: TaskContext, **notes) -> TaskOutput:
        value, se, extra = summarize(rows)
        prompts_src = (ctx.options.get("judge_prompts")
                       or f"sftlab:judge_prompts/{self.prompts_resource}")
        return TaskOutput(
            metric="rating", value=value, stderr=se, n=len(rows) - extra["n_missing"], rows=rows,
            outcomes=count_outcomes(rows), extra=extra,
            notes={"judge": judge.provenance(), "judge_prompts": str(prompts_src),
                   "judge_stats": dict(judge.stats), "temperatures": TEMPERATURE, **notes},
        )


def ja_mt_bench() -> MTBench:
    """Japanese MT-Bench (FastChat jp-stable's questions and references): the same
    machinery with Japanese judge prompts of sftlab's own; FastChat's
    ``judge_ja_prompts.jsonl`` (single-v1, single-math-v1) can be given with
    ``--judge-prompts`` and replaces those two."""
    return MTBench("ja_mt_bench.jsonl", merge_prompts=True)
