"""MATH (Hendrycks): competition problems, the final answer checked by Math-Verify.

Data: ``math_test.jsonl`` (5,000; ``unique_id, problem, solution, level, type``)
or ``math500_test.jsonl`` (MATH-500, the named subset). The item id is
``unique_id`` when present, else the row index. 0-shot, except with retrieved
few-shot examples (``fewshot: retrieval``) in the ``lm-eval`` format: each example is
``Problem:\n{problem}\n\nSolution: {solution}``, joined by a blank line (as lm-eval
writes minerva_math's shots). The pool defaults to the evaluation split, the item
itself excluded.

- ``opencompass`` (``math_0shot_gen_393424``): ``{problem}\\nPlease reason step by
  step, and put your final answer within \\boxed{}.``, up to 1024 new tokens.
- ``lm-eval`` (``minerva_math``, 0-shot): ``Problem:\\n{problem}\\n\\nSolution:``,
  stop ``Problem:``.

Headline: ``opencompass``: OpenCompass's ``MATHEvaluator(version='v2')`` on
``math_postprocess_v2`` of the output against the last ``\\boxed{}`` of the solution
(:mod:`sftlab.evaluate.tasks.oc_math`); ``extra["math_verify"]``: Math-Verify, which
accepts more (``\\boxed{0.5}`` for ``\\frac{1}{2}``). ``lm-eval``: Math-Verify (correct when
``verify(parse(gold_solution), parse(output))``, run in worker processes with an outer
timeout).
"""

from __future__ import annotations

from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.tasks.base import GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.generation import GenerationTask, SampleScore

OC_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


class MATH(GenerationTask):
    eval_split = "test"
    fewshot_split = None
    aliases = ("math",)
    hub = HubSource("HuggingFaceH4/MATH-500", None, (("test", "test"),))
    max_new_tokens = 1024
    votes = True

    def vote_answers(self, texts: list[str], verdicts: list[SampleScore]) -> list[str | None]:
        """maj@K votes on the text of each output's last ``\\boxed{}`` as written."""
        from sftlab.evaluate.math_check import extract_boxed

        return [None if (b := extract_boxed(t)) is None or not b.strip() else b.strip()
                for t in texts]

    def consensus_inputs(self, texts: list[str],
                         verdicts: list[SampleScore]) -> list[str | None]:
        """The whole outputs: Math-Verify extracts each answer as it does for scoring."""
        return [None if v.outcome == "parse_failure" else t
                for t, v in zip(texts, verdicts, strict=True)]

    def allowed_shots(self, fmt: str) -> tuple[int, ...]:
        return (0,)

    def retrieval_shots(self, fmt: str) -> tuple[int, ...] | None:
        return None if fmt == "lm-eval" else (0,)

    def required_fields(self) -> tuple[str, ...]:
        return ("problem", "solution")

    def make_items(self, rows: list[dict[str, Any]], split: str) -> list[Item]:
        return [Item(str(r.get("unique_id", i)), r) for i, r in enumerate(rows)]

    def query(self, item: Item, shots: list[Item], fmt: str) -> GenQuery:
        if fmt == "opencompass":
            from sftlab.evaluate.tasks.opencompass import Round, gen_query

            return gen_query([Round(item.doc["problem"] + OC_SUFFIX)], (), 1024)
        parts = [f"Problem:\n{s.doc['problem']}\n\nSolution: {s.doc['solution']}" for s in shots]
        prompt = "\n\n".join([*parts, f"Problem:\n{item.doc['problem']}\n\nSolution:"])
        return GenQuery(prompt, ("Problem:",), 1024)

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        from sftlab.evaluate.math_check import verify_batch

        pairs = [(it.doc["solution"], text) for it, texts in zip(items, samples, strict=True)
                 for text in texts]
        results = iter(verify_batch(pairs, timeout=float(ctx.options.get("math_timeout", 5.0))))
        from sftlab.evaluate.tasks.oc_math import boxed_answer, is_equiv_v2, math_postprocess_v2

        out = []
        for item, texts in zip(items, samples, strict=True):
            verdicts = []
            gold = boxed_answer(item.doc["solution"])
            for text in texts:
                r = next(results)
                if r.outcome == "ok":
                    outcome = "pass" if r.correct else "fail"
                else:
                    outcome = r.outcome
                if ctx.format == "opencompass":  # OpenCompass's own check is the headline
                    pred = math_postprocess_v2(text)
                    ok = is_equiv_v2(pred, gold)
                    verdicts.append(SampleScore(ok, pred, "pass" if ok else "fail", extra={
                        "gold": gold, "math_verify_correct": bool(r.correct),
                        "math_verify_outcome": outcome, "math_verify_pred": r.pred_parsed}))
                    continue
                verdicts.append(SampleScore(bool(r.correct), r.pred_parsed, outcome,
                                            extra={"gold_parsed": r.gold_parsed}))
            out.append(verdicts)
        return out

    def extra_metrics(self, rows, samples, by_index):  # type: ignore[no-untyped-def]
        from sftlab.evaluate.tasks.base import percent_metric

        extra = super().extra_metrics(rows, samples, by_index)
        if any("math_verify_correct" in r for r in rows):
            extra["math_verify"], extra["math_verify_stderr"] = percent_metric(
                [1.0 if r.get("math_verify_correct") else 0.0 for r in rows])
        return extra
