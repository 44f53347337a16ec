"""Generate-until tasks (math, gsm8k, mbpp, humaneval, nq_open).

A subclass implements ``query(item, shots, fmt) -> GenQuery`` and
``score(items, samples, ctx) -> list[SampleScore lists]``. ``run`` generates
through a backend; ``replay`` scores texts produced elsewhere. Both build the
same per-item rows: ``score`` is the fraction of samples that are correct
(pass@1 for code), ``correct`` / ``extracted`` / ``outcome`` describe the first
sample, ``samples`` lists every sample's outcome when there are several.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import Backend, GenerateRequest
from sftlab.evaluate.tasks.base import (
    GenQuery,
    Item,
    TaskContext,
    TaskOutput,
    count_outcomes,
    percent_metric,
    prompt_hash,
)
from sftlab.evaluate.tasks.benchmark import (
    BenchmarkTask,
    Loaded,
    render_with_template,
    templated_prompt,
    with_fewshot_ids,
)

PROMPT_KEEP = 4000


@dataclass
class SampleScore:
    """The verdict on one generated sample."""

    correct: bool
    extracted: Any
    outcome: str  # pass / fail / timeout / error / parse_failure
    reason: str | None = None
    extra: dict[str, Any] | None = None  # secondary verdicts (e.g. gsm8k flexible match)


class GenerationTask(BenchmarkTask):
    """Generate text after a prompt and score it."""

    max_new_tokens: int = 512
    headline: str = "acc"  # metric name of the headline value

    def query(self, item: Item, shots: list[Item], fmt: str) -> GenQuery:
        raise NotImplementedError

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        """One list of verdicts per item, one verdict per sample."""
        raise NotImplementedError

    def build_queries(self, ctx: TaskContext) -> tuple[Loaded, list[GenQuery]]:
        self.check(ctx)
        loaded = self.load_items(ctx)
        queries = []
        for it in loaded.items:
            q = self.query(it, self.fewshot_for(it, loaded, ctx), ctx.format)
            queries.append(GenQuery(templated_prompt(ctx, q), q.stop, q.max_new_tokens, q.rounds))
        return loaded, queries

    def run(self, backend: Backend, ctx: TaskContext) -> TaskOutput:
        from sftlab.evaluate.sampling import Sampling

        loaded, queries = self.build(ctx)
        sampling = Sampling.from_options(ctx.options)
        temperature, top_p = sampling.resolved()
        seed = ctx.seed if sampling.seed is None else sampling.seed
        cap = ctx.options.get("max_new_tokens")
        # key = the item id: a sample's randomness depends on (seed, item, index) only
        requests = [GenerateRequest(q.prompt, q.stop, int(cap or q.max_new_tokens), temperature,
                                    top_p, sampling.samples, seed, key=it.id)
                    for it, q in zip(loaded.items, queries, strict=True)]
        forcing = ctx.options.get("budget_forcing")
        tool_use = ctx.options.get("tool_use")
        rsa = ctx.options.get("self_aggregation")
        if sum(map(bool, (forcing, tool_use, rsa))) > 1:
            raise UserError(f"task {self.name}: budget_forcing, tool_use and self_aggregation "
                            "cannot be combined")
        if rsa:
            return self._self_aggregate(backend, loaded, queries, requests, ctx, rsa, seed)
        if tool_use:
            from sftlab.evaluate.tools import ToolUse, generate_with_tools

            samples, costs = generate_with_tools(backend, requests,
                                                 [it.id for it in loaded.items],
                                                 ToolUse.model_validate(tool_use))
        elif forcing:
            from sftlab.evaluate.budget import BudgetForcing, generate_forced

            samples, records = generate_forced(backend, requests,
                                               [it.id for it in loaded.items],
                                               BudgetForcing.model_validate(forcing))
            costs = [[{"tokens": r["thinking_tokens"] + r["answer_tokens"], "budget": r}
                      for r in group] for group in records]
        else:
            results = backend.generate(requests)
            samples = [list(r.texts) for r in results]
            costs = [[{"tokens": t} for t in r.n_completion_tokens]
                     if len(r.n_completion_tokens) == len(r.texts) else [] for r in results]
        out = self._finish(loaded, queries, samples, ctx)
        for row, cost in zip(out.rows, costs, strict=True):  # the cost of each sample
            if cost and len(row.get("samples", ())) == len(cost):
                for sample, c in zip(row["samples"], cost, strict=True):
                    sample |= c
            elif (forcing or tool_use) and len(cost) == 1:
                row |= cost[0]
        return out

    def _self_aggregate(self, backend: Backend, loaded: Loaded, queries: list[GenQuery],
                        requests: list[GenerateRequest], ctx: TaskContext, settings: dict,
                        seed: int) -> TaskOutput:
        """Recursive self-aggregation (:mod:`sftlab.evaluate.aggregation`); the last
        population is the result, pass@K (and cons@K, maj@K) of every loop's population
        are in ``extra["rsa"]``."""
        from sftlab.evaluate.aggregation import SelfAggregation, self_aggregate

        rsa = SelfAggregation.model_validate(settings)
        # a greedy benchmark still samples its population (at the paper's temperature 1.0)
        requests = [replace(r, temperature=r.temperature or 1.0) for r in requests]
        problems = [self.query(it, self.fewshot_for(it, loaded, ctx), ctx.format).prompt
                    for it in loaded.items]
        per_loop: list[dict[str, Any]] = []
        outputs: list[TaskOutput] = []

        def on_loop(loop: int, populations: list[list[str]]) -> None:
            outputs.append(self._finish(loaded, queries, populations, ctx))
            per_loop.append({"loop": loop, self.headline: outputs[-1].value,
                             **{k: v for k, v in outputs[-1].extra.items()
                                if "@" in k and not k.endswith("_stderr")}})

        self_aggregate(backend, requests, [it.id for it in loaded.items], problems,
                       lambda text: render_with_template(ctx.template, text), rsa, seed, on_loop)
        out = outputs[-1]
        out.extra["rsa"] = per_loop
        out.notes["self_aggregation"] = rsa.model_dump()
        return out

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        loaded, queries = self.build(ctx)
        samples = [list(outputs.get(it.id, [])) for it in loaded.items]
        return self._finish(loaded, queries, samples, ctx)

    def _finish(self, loaded: Loaded, queries: list[GenQuery], samples: list[list[str]],
                ctx: TaskContext) -> TaskOutput:
        present = [i for i, s in enumerate(samples) if s]
        verdicts = self.score([loaded.items[i] for i in present], [samples[i] for i in present], ctx)
        by_index = dict(zip(present, verdicts, strict=True))
        rows = with_fewshot_ids([self._row(it, q, s, by_index.get(i)) for i, (it, q, s)
                                 in enumerate(zip(loaded.items, queries, samples, strict=True))],
                                loaded)
        value, se = percent_metric([r["score"] for r in rows])
        extra = self.extra_metrics(rows, samples, by_index)
        sampled, sampling_note = self.sampling_metrics(rows, samples, by_index, ctx)
        notes = self.notes(loaded, ctx) | ({"sampling": sampling_note} if sampling_note else {})
        return TaskOutput(self.headline, value, se, len(rows), rows, self._outcomes(rows, by_index),
                          extra | sampled, notes)

    def _row(self, item: Item, q: GenQuery, texts: list[str],
             verdicts: list[SampleScore] | None) -> dict[str, Any]:
        row: dict[str, Any] = {"item_id": item.id, "prompt_hash": prompt_hash(q.prompt),
                               "prompt": q.prompt[-PROMPT_KEEP:]}
        if not verdicts:
            return row | {"output": None, "extracted": None, "correct": False, "score": 0.0,
                          "outcome": "missing"}
        first = verdicts[0]
        row |= {"output": texts[0], "extracted": first.extracted, "correct": first.correct,
                "score": sum(v.correct for v in verdicts) / len(verdicts),
                "outcome": first.outcome}
        if first.reason:
            row["reason"] = first.reason
        if first.extra:
            row |= first.extra
        if len(verdicts) > 1:
            row["n_samples"] = len(verdicts)
            row["n_correct"] = sum(v.correct for v in verdicts)
            row["samples"] = [{"output": t, "extracted": v.extracted, "correct": v.correct,
                               "outcome": v.outcome}
                              for t, v in zip(texts, verdicts, strict=True)]
        return row

    @staticmethod
    def _outcomes(rows: list[dict[str, Any]],
                  by_index: dict[int, list[SampleScore]]) -> dict[str, int]:
        """Outcome counts over every sample (rows without samples count as missing)."""
        counts = count_outcomes([r for i, r in enumerate(rows) if i not in by_index])
        for verdicts in by_index.values():
            for v in verdicts:
                counts[v.outcome] = counts.get(v.outcome, 0) + 1
        return dict(sorted(counts.items()))

    def extra_metrics(self, rows: list[dict[str, Any]], samples: list[list[str]],
                      by_index: dict[int, list[SampleScore]]) -> dict[str, Any]:
        """Secondary metrics of the task (acc_norm, flexible match ...); none by default."""
        return {}

    # ----------------------------------------------------------- repeated sampling

    votes: bool = False  # answers can be voted on: cons@K / maj@K (math, gsm8k)

    def vote_answers(self, texts: list[str], verdicts: list[SampleScore]) -> list[str | None]:
        """The answer strings maj@K votes on (exact equality); None = no answer."""
        return [None if v.outcome == "parse_failure" or v.extracted in (None, "")
                else str(v.extracted) for v in verdicts]

    def consensus_inputs(self, texts: list[str],
                         verdicts: list[SampleScore]) -> list[str | None]:
        """What Math-Verify compares for cons@K (default: the extracted answers)."""
        return self.vote_answers(texts, verdicts)

    def sampling_metrics(self, rows: list[dict[str, Any]], samples: list[list[str]],
                         by_index: dict[int, list[SampleScore]],
                         ctx: TaskContext) -> tuple[dict[str, Any], dict[str, Any]]:
        """``pass@K`` (and ``cons@K``, ``maj@K`` for tasks that vote) over the samples of
        each item (:mod:`sftlab.evaluate.sampling`); nothing for one sample per item
        unless ``k`` is asked for. Returns the metrics and a note on how they were made."""
        from sftlab.evaluate.sampling import (
            Sampling,
            check_ks,
            default_ks,
            sample_scores,
            subsets_note,
        )

        sampling = Sampling.from_options(ctx.options)
        if not by_index:
            return {}, {}
        n_min = min(len(v) for v in by_index.values())
        if sampling.k is None and n_min < 2:
            return {}, {}
        ks = sampling.k or default_ks(n_min)
        check_ks(ks, {rows[i]["item_id"]: len(v) for i, v in by_index.items()})
        seed = ctx.seed if sampling.seed is None else sampling.seed
        correct = [[s.correct for s in by_index[i]] if i in by_index else None
                   for i in range(len(rows))]
        answers = equivalence = None
        if self.votes:
            answers = [self.vote_answers(samples[i], by_index[i]) if i in by_index else []
                       for i in range(len(rows))]
            inputs = {i: self.consensus_inputs(samples[i], by_index[i]) for i in by_index}
            timeout = float(ctx.options.get("math_timeout", 5.0))

            def equivalence(_: list) -> list[list[list[bool]]]:
                return _math_verify_matrices([inputs[i] for i in sorted(inputs)], timeout)

            for i in by_index:  # a sample votes in cons@K when Math-Verify had an input
                answers[i] = [a if x is not None else None
                              for a, x in zip(answers[i], inputs[i], strict=True)]
        metrics, per_item = sample_scores(correct, ks, answers=answers, equivalence=equivalence,
                                          seed=seed)
        for row, values in zip(rows, per_item, strict=True):  # per item, for the report
            if values:
                row["at_k"] = values
        temperature, top_p = sampling.resolved()
        note: dict[str, Any] = {"samples": n_min, "k": list(ks), "seed": seed,
                                "temperature": temperature, "top_p": top_p,
                                "pass@k": "unbiased estimator (Chen et al. 2021)"}
        if self.votes:
            note["votes"] = (subsets_note(n_min, ks, seed) + "; cons: Math-Verify equivalence "
                             "both ways, greedy clusters in order of appearance; maj: exact "
                             "strings; largest cluster wins, ties by first appearance; a "
                             "sample without an answer does not vote")
        return metrics, note


def _math_verify_matrices(groups: list[list[str | None]],
                          timeout: float) -> list[list[list[bool]]]:
    """Math-Verify equivalence (both directions) of each group's answers; None never
    equals anything."""
    from sftlab.evaluate.math_check import equivalence_matrices

    kept = [[a for a in g if a is not None] for g in groups]
    inner = equivalence_matrices(kept, timeout=timeout)
    out = []
    for g, m in zip(groups, inner, strict=True):
        idx = [i for i, a in enumerate(g) if a is not None]
        full = [[False] * len(g) for _ in g]
        for a, i in enumerate(idx):
            for b, j in enumerate(idx):
                full[i][j] = m[a][b]
        out.append(full)
    return out
