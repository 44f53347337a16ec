"""AlpacaEval 2 (``--task alpaca_eval``): pairwise preference against a baseline's outputs.

Data (``ctx.data``): the 805 instructions with the baseline's outputs, in AlpacaEval's
``model_outputs.json`` shape (a JSON list of ``{instruction, output, generator,
dataset}``; AlpacaEval 2's baseline is ``gpt4_1106_preview``), or a folder holding one
such ``.json`` file whose name contains ``alpaca``.

Each instruction's answer is generated (greedy unless ``temperature`` is set), then a
judge compares it with the baseline's output. Which output is shown first is drawn
per item from ``random.Random(f"{seed}:{item_id}")`` (``seed`` = ``ctx.seed``, recorded
in the notes and in each row's ``model_position``), which cancels the judge's
position bias on average. The verdict is ``[[A]]`` or ``[[B]]`` (FastChat's pairwise
convention; both or neither = missing, never a loss).

Results: ``lc_win_rate`` (headline) and ``win_rate``, in percent, with standard
errors; see :mod:`sftlab.evaluate.lc_winrate` for the GLM and where it differs from
AlpacaEval's official fit.

Options: ``judge``, ``judge_cache``, ``judge_prompts`` (a ``.jsonl`` with a pairwise
prompt using ``{instruction}``, ``{output_1}``, ``{output_2}``; default: sftlab's),
``judge_prompt_name`` (default ``alpaca-pair-v1``), ``max_new_tokens`` (default 2048),
``temperature`` (default 0), ``instruction_difficulty`` (a CSV of AlpacaEval's official
per-instruction difficulty, index = item position: switches the GLM to the official
form), ``n_bootstrap`` (default 200).
"""

from __future__ import annotations

import csv
import json
import math
import random
from importlib import resources
from pathlib import Path
from typing import Any

from sftlab import jsonio
from sftlab.errors import UserError
from sftlab.evaluate.backends.base import GenerateRequest
from sftlab.evaluate.judge import JudgeClient, judge_from_options
from sftlab.evaluate.lc_winrate import length_controlled_winrate
from sftlab.evaluate.tasks.base import (
    TaskContext,
    TaskOutput,
    count_outcomes,
    prompt_hash,
)
from sftlab.evaluate.tasks.judged import JudgedTask
from sftlab.evaluate.tasks.mt_bench import DEFAULT_CHAT_TEMPLATE
from sftlab.study.template import render_prompt

DEFAULT_PROMPT = "alpaca-pair-v1"


def parse_preference(judgment: str | None) -> str | None:
    """``"A"`` or ``"B"`` when exactly one of ``[[A]]`` / ``[[B]]`` appears; else None."""
    if not judgment:
        return None
    a, b = "[[A]]" in judgment, "[[B]]" in judgment
    return "A" if a and not b else "B" if b and not a else None


def load_baseline(data: str | None) -> tuple[list[dict[str, Any]], str]:
    """The baseline rows and the file they came from."""
    if data is None:
        raise UserError("alpaca_eval needs the instructions and baseline outputs: --data "
                        "path/to/model_outputs.json (AlpacaEval's shape)")
    path = Path(data)
    if path.is_dir():
        hits = sorted(p for p in path.glob("*.json") if "alpaca" in p.name.lower()
                      and "eval" in p.name.lower())
        if len(hits) != 1:
            raise UserError(f"expected one AlpacaEval .json here, found {len(hits)}: "
                            f"{', '.join(p.name for p in hits)}", where=str(path))
        path = hits[0]
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read: {err}", where=str(path)) from None
    if not isinstance(rows, list) or any(not isinstance(r, dict) or "instruction" not in r
                                         or "output" not in r for r in rows):
        raise UserError("expected a JSON list of {instruction, output, ...} objects",
                        where=str(path))
    return rows, str(path)


def load_pair_prompt(path: str | None, name: str) -> dict[str, Any]:
    if path is None:
        text = resources.files("sftlab.resources").joinpath("judge_prompts/alpaca_eval.jsonl")
        lines = jsonio.lines(text.read_text(encoding="utf-8"))
    else:
        lines = jsonio.lines(Path(path).read_text(encoding="utf-8"))
    prompts = {p["name"]: p for p in (json.loads(line) for line in lines if line.strip())}
    if name not in prompts:
        raise UserError(f"no judge prompt named {name!r} (have: {', '.join(prompts)})",
                        where=str(path or "sftlab:judge_prompts/alpaca_eval.jsonl"))
    return prompts[name]


def model_first(seed: int, item_id: str) -> bool:
    """Whether the model's output is shown as answer A for this item."""
    return random.Random(f"{seed}:{item_id}").random() < 0.5


def judge_messages(prompt: dict[str, Any], instruction: str, first: str,
                   second: str) -> list[dict[str, str]]:
    user = prompt["prompt_template"].format(instruction=instruction, output_1=first,
                                            output_2=second)
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": user}]


def grade(items: list[tuple[str, dict[str, Any]]], outputs: dict[str, str],
          model_prompts: dict[str, str], judge: JudgeClient, prompt: dict[str, Any],
          seed: int) -> list[dict[str, Any]]:
    """One prediction row per instruction; ``score`` = 1 if the model's output won."""
    requests, firsts = [], []
    for item_id, row in items:
        first = model_first(seed, item_id)
        pair = (outputs[item_id], row["output"]) if first else (row["output"], outputs[item_id])
        requests.append(judge_messages(prompt, row["instruction"], *pair))
        firsts.append(first)
    rows = []
    for (item_id, row), first, judgment in zip(items, firsts, judge.judge_many(requests),
                                               strict=True):
        verdict = parse_preference(judgment.text)
        mine = "A" if first else "B"
        score = None if verdict is None else float(verdict == mine)
        outcome = ("error" if judgment.text is None else "missing" if verdict is None
                   else "win" if score else "loss")
        prompt_text = model_prompts.get(item_id, "")
        rows.append({"item_id": item_id, "prompt_hash": prompt_hash(prompt_text),
                     "prompt": prompt_text, "output": outputs[item_id], "extracted": verdict,
                     "correct": None, "score": score, "outcome": outcome,
                     "model_position": mine, "dataset": row.get("dataset"),
                     "baseline_generator": row.get("generator"),
                     "model_length": len(outputs[item_id]), "baseline_length": len(row["output"]),
                     "judgment": judgment.text, "judge_error": judgment.error})
    return rows


def _difficulty(path: str | None, items: list[tuple[str, dict]]) -> list[float] | None:
    if path is None:
        return None
    with open(path, newline="", encoding="utf-8") as f:
        table = {r[0]: float(r[1]) for r in csv.reader(f) if len(r) >= 2 and _is_number(r[1])}
    try:
        return [table[item_id] for item_id, _ in items]
    except KeyError as err:
        raise UserError(f"no difficulty for item {err}", where=path) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def summarize(rows: list[dict[str, Any]], difficulty: list[float] | None, n_bootstrap: int,
              seed: int) -> tuple[float, float, dict[str, Any]]:
    """(LC win rate, its standard error, extra metrics) in percent."""
    judged = [(k, r) for k, r in enumerate(rows) if r["score"] is not None]
    extra: dict[str, Any] = {"n_missing": len(rows) - len(judged),
                             "n_wins": sum(r["score"] == 1.0 for _, r in judged),
                             "avg_length": (sum(r["model_length"] for r in rows) / len(rows)
                                            if rows else math.nan)}
    if len(judged) < 2:
        extra.update(win_rate=math.nan, win_rate_stderr=math.nan)
        return math.nan, math.nan, extra
    rates = length_controlled_winrate(
        [r["score"] for _, r in judged], [r["model_length"] for _, r in judged],
        [r["baseline_length"] for _, r in judged],
        difficulty=None if difficulty is None else [difficulty[k] for k, _ in judged],
        n_bootstrap=n_bootstrap, seed=seed)
    extra.update(win_rate=rates.win_rate, win_rate_stderr=rates.win_rate_se,
                 glm_model_coef=rates.model_coef, glm_length_coef=rates.length_coef)
    return rates.lc_win_rate, rates.lc_se, extra


class AlpacaEval(JudgedTask):
    def preflight(self, ctx: TaskContext) -> None:
        """Settings, judge options, baseline file and judge prompt (no model, no judge
        contacted)."""
        self._load(ctx)

    def _load(self, ctx: TaskContext) -> tuple:
        cached = getattr(self, "_loaded", None)
        if cached is not None and cached[0] is ctx:
            return cached[1]
        self.check(ctx)
        rows, source = load_baseline(ctx.data)
        items = [(str(i), row) for i, row in enumerate(rows)][: ctx.limit]
        prompt = load_pair_prompt(ctx.options.get("judge_prompts"),
                                  ctx.options.get("judge_prompt_name", DEFAULT_PROMPT))
        difficulty = _difficulty(ctx.options.get("instruction_difficulty"), items)
        self._loaded = (ctx, (items, source, prompt, difficulty))
        return items, source, prompt, difficulty

    def _setup(self, ctx: TaskContext):
        return (*self._load(ctx), judge_from_options(ctx.options))

    def run(self, backend: Any, ctx: TaskContext) -> TaskOutput:
        items, source, prompt, difficulty, judge = self._setup(ctx)
        template = ctx.template or DEFAULT_CHAT_TEMPLATE
        max_new = int(ctx.options.get("max_new_tokens", 2048))
        temperature = float(ctx.options.get("temperature", 0.0))
        stop = template.split("{instruction}")[0].strip()
        prompts = {item_id: render_prompt(template, row["instruction"]) for item_id, row in items}
        requests = [GenerateRequest(prompt=prompts[item_id], stop=(stop,) if stop else (),
                                    max_new_tokens=max_new, temperature=temperature, seed=ctx.seed)
                    for item_id, _ in items]
        results = backend.generate(requests)
        outputs = {item_id: r.texts[0].strip() for (item_id, _), r in zip(items, results,
                                                                          strict=True)}
        with judge:
            rows = grade(items, outputs, prompts, judge, prompt, ctx.seed)
        return self._output(rows, judge, ctx, source, difficulty, template=template,
                            max_new_tokens=max_new, temperature=temperature)

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        items, source, prompt, difficulty, judge = self._setup(ctx)
        lacking = [item_id for item_id, _ in items if not outputs.get(item_id)]
        if lacking:
            raise UserError(f"alpaca_eval: no output for item(s) {', '.join(lacking[:5])}")
        texts = {item_id: outputs[item_id][0].strip() for item_id, _ in items}
        with judge:
            rows = grade(items, texts, {}, judge, prompt, ctx.seed)
        return self._output(rows, judge, ctx, source, difficulty)

    def _output(self, rows, judge, ctx, source, difficulty, **notes) -> TaskOutput:
        n_boot = int(ctx.options.get("n_bootstrap", 200))
        value, se, extra = summarize(rows, difficulty, n_boot, ctx.seed)
        return TaskOutput(
            metric="lc_win_rate", value=value, stderr=se, n=len(rows) - extra["n_missing"],
            rows=rows, outcomes=count_outcomes(rows), extra=extra,
            notes={"judge": judge.provenance(), "judge_stats": dict(judge.stats),
                   "position_seed": ctx.seed, "baseline": source,
                   "glm": "official difficulty" if difficulty else "offline per-instruction L2",
                   **notes},
        )
