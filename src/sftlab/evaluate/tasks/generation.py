"""Generate-until tasks (math, gsm8k, mbpp, humaneval, nq_open).

A subclass implements ``query(item, shots, fmt) -> GenQuery`` and
``score(items, samples, ctx) -> list[SampleScore lists]``. ``run`` generates
through a backend; ``replay`` scores texts produced elsewhere. Both build the
same per-item rows: ``score`` is the fraction of samples that are correct
(pass@1 for code), ``correct`` / ``extracted`` / ``outcome`` describe the first
sample, ``samples`` lists every sample's outcome when there are several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    templated_prompt,
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
        loaded = self.load(ctx)
        queries = []
        for it in loaded.items:
            q = self.query(it, self.shots_for(it, loaded, ctx), ctx.format)
            queries.append(GenQuery(templated_prompt(ctx, q), q.stop, q.max_new_tokens, q.rounds))
        return loaded, queries

    def run(self, backend: Backend, ctx: TaskContext) -> TaskOutput:
        loaded, queries = self.build(ctx)
        n = int(ctx.options.get("n", 1))
        temperature = float(ctx.options.get("temperature", 0.0 if n == 1 else 0.8))
        top_p = float(ctx.options.get("top_p", 1.0 if n == 1 else 0.95))
        requests = [GenerateRequest(q.prompt, q.stop, int(ctx.options.get("max_new_tokens",
                                                                          q.max_new_tokens)),
                                    temperature, top_p, n, ctx.seed) for q in queries]
        results = backend.generate(requests)
        samples = [list(r.texts) for r in results]
        return self._finish(loaded, queries, samples, ctx)

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        loaded, queries = self.build(ctx)
        samples = [list(outputs.get(it.id, [])) for it in loaded.items]
        return self._finish(loaded, queries, samples, ctx)

    def _finish(self, loaded: Loaded, queries: list[GenQuery], samples: list[list[str]],
                ctx: TaskContext) -> TaskOutput:
        present = [i for i, s in enumerate(samples) if s]
        verdicts = self.score([loaded.items[i] for i in present], [samples[i] for i in present], ctx)
        by_index = dict(zip(present, verdicts, strict=True))
        rows = [self._row(it, q, s, by_index.get(i))
                for i, (it, q, s) in enumerate(zip(loaded.items, queries, samples, strict=True))]
        value, se = percent_metric([r["score"] for r in rows])
        extra = self.extra_metrics(rows, samples, by_index)
        return TaskOutput(self.headline, value, se, len(rows), rows, self._outcomes(rows, by_index),
                          extra, self.notes(loaded, ctx))

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
            row["samples"] = [{"output": t, "extracted": v.extracted, "outcome": v.outcome}
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
        """Secondary metrics; by default unbiased pass@k for k <= the smallest sample count."""
        from sftlab.evaluate.metrics import pass_at_k

        if not by_index:
            return {}
        n_min = min(len(v) for v in by_index.values())
        extra: dict[str, Any] = {}
        for k in (1, 5, 10, 100):
            if 1 < k <= n_min:
                vals = [pass_at_k(len(v), sum(s.correct for s in v), k) if v else 0.0
                        for v in (by_index.get(i, []) for i in range(len(rows)))]
                extra[f"pass@{k}"] = 100.0 * sum(vals) / len(vals)
        return extra
