"""Multiple-choice tasks (mmlu, hellaswag, boolq): by log-likelihood, or generated.

A subclass implements ``query(item, shots, fmt) -> ChoiceQuery``. ``run`` sends
one log-likelihood request per choice (plus, for ``mean_full``, one for the
context itself), picks the most likely choice, and reports ``acc`` (headline)
and ``acc_norm`` (log-likelihood divided by the continuation's characters,
lm-evaluation-harness style) in ``extra``.

Under a generative OpenCompass config (``*_gen_*``) the task instead implements
``gen_query(item, shots, ctx) -> GenQuery`` and ``gold_label(item)``: the model writes
an answer, the config's postprocessor (``first_option_postprocess``,
``first_capital_postprocess``) extracts a label, and the item is correct when it equals
the gold label (an unparsable answer is wrong, as in OpenCompass).
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import Backend, LoglikelihoodRequest, LoglikelihoodResult
from sftlab.evaluate.tasks.base import (
    ChoiceQuery,
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
from sftlab.evaluate.tasks.generation import GenerationTask, SampleScore

PROMPT_KEEP = 4000  # characters of the prompt kept in prediction rows


def _norm_len(choice: str) -> int:
    """Characters of a choice without the single target delimiter space (lm-eval acc_norm)."""
    return max(1, len(choice[1:] if choice.startswith(" ") else choice))


def templated(query: ChoiceQuery, template: str | None) -> ChoiceQuery:
    """The query with its context placed in the study template (continuations left-stripped)."""
    if template is None:
        return query
    return ChoiceQuery(render_with_template(template, query.context),
                       [c.lstrip() for c in query.choices], query.gold, query.mode)


class ChoiceTask(BenchmarkTask):
    """Pick one of several continuations by log-likelihood."""

    labels: tuple[str, ...] | None = None  # how a choice index is shown (e.g. A-D); None = text

    def query(self, item: Item, shots: list[Item], fmt: str) -> ChoiceQuery:
        raise NotImplementedError

    # ------------------------------------------------------------ generative configs

    def generative(self, ctx: TaskContext) -> bool:
        """Whether ``ctx`` runs a generative config (the answer is written, not ranked)."""
        from sftlab.evaluate.tasks.opencompass import kind_of

        return kind_of(ctx.config) == "gen"

    def gen_query(self, item: Item, shots: list[Item], ctx: TaskContext) -> GenQuery:
        raise NotImplementedError

    def gold_label(self, item: Item) -> str:
        """The label a generative config's extracted answer must equal."""
        raise NotImplementedError

    def _generator(self) -> ChoiceGeneration:
        gen = getattr(self, "_gen", None)
        if gen is None:
            gen = self._gen = ChoiceGeneration(self)
        return gen

    def build_queries(self, ctx: TaskContext) -> tuple[Loaded, list[Any]]:
        """Load items and build each item's (templated) query."""
        self.check(ctx)
        if self.generative(ctx):
            return self._generator().build(ctx)
        if ctx.template is not None and ctx.template_mode == "rounds" and ctx.format == "opencompass":
            raise UserError(f"task {self.name}: template_mode rounds covers the generative "
                            f"configs; {ctx.config} is scored by likelihood (use "
                            "template_mode instruction)")
        loaded = self.load_items(ctx)
        queries = [templated(self.query(it, self.fewshot_for(it, loaded, ctx), ctx.format),
                             ctx.template) for it in loaded.items]
        return loaded, queries

    def run(self, backend: Backend, ctx: TaskContext) -> TaskOutput:
        loaded, queries = self.build(ctx)
        if self.generative(ctx):
            return self._generator().run(backend, ctx)
        requests: list[LoglikelihoodRequest] = []
        for q in queries:
            requests += [LoglikelihoodRequest(q.context, c) for c in q.choices]
            if q.mode == "mean_full":
                requests.append(LoglikelihoodRequest("", q.context))
        results = iter(backend.loglikelihood(requests))
        rows = []
        for item, q in zip(loaded.items, queries, strict=True):
            res = [next(results) for _ in q.choices]
            ctx_res = next(results) if q.mode == "mean_full" else None
            rows.append(self._row(item, q, res, ctx_res))
        return self._output(rows, loaded, ctx)

    def _row(self, item: Item, q: ChoiceQuery, res: list[LoglikelihoodResult],
             ctx_res: LoglikelihoodResult | None) -> dict[str, Any]:
        lls = [r.logprob for r in res]
        if ctx_res is not None:  # lowest mean NLL over the whole sequence
            keys = [(ctx_res.logprob + r.logprob) / (ctx_res.n_tokens + r.n_tokens) for r in res]
        else:
            keys = lls
        pick = max(range(len(keys)), key=keys.__getitem__)
        norm = [ll / _norm_len(c) for ll, c in zip(lls, q.choices, strict=True)]
        pick_norm = max(range(len(norm)), key=norm.__getitem__)
        correct = pick == q.gold
        return {
            "item_id": item.id, "prompt_hash": prompt_hash(q.context),
            "prompt": q.context[-PROMPT_KEEP:], "output": q.choices[pick],
            "extracted": self.label(pick), "gold": self.label(q.gold),
            "correct": correct, "score": 1.0 if correct else 0.0,
            "correct_norm": pick_norm == q.gold,
            "outcome": "pass" if correct else "fail",
            "logprobs": [round(x, 6) for x in lls],
        }

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else str(index)

    def _output(self, rows: list[dict[str, Any]], loaded: Loaded, ctx: TaskContext) -> TaskOutput:
        rows = with_fewshot_ids(rows, loaded)
        acc, se = percent_metric([r["score"] for r in rows])
        extra: dict[str, Any] = {}
        if "correct_norm" in rows[0]:
            extra["acc_norm"], extra["acc_norm_stderr"] = percent_metric(
                [1.0 if r["correct_norm"] else 0.0 for r in rows])
        extra.update(self.extra_metrics(rows, loaded))
        out = TaskOutput("acc", acc, se, len(rows), rows, count_outcomes(rows), extra,
                         self.notes(loaded, ctx))
        return self.aggregate(out, loaded, ctx)

    def extra_metrics(self, rows: list[dict[str, Any]], loaded: Loaded) -> dict[str, Any]:
        """Task-specific secondary metrics."""
        return {}

    def aggregate(self, out: TaskOutput, loaded: Loaded, ctx: TaskContext) -> TaskOutput:
        """The task's headline from its item rows (default: the item mean, as built)."""
        return out

    # ------------------------------------------------------------ replay

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        """Score generated texts: the choice the text starts with (or its label) is the answer."""
        loaded, queries = self.build(ctx)
        if self.generative(ctx):
            return self._generator().replay(outputs, ctx)
        rows = []
        for item, q in zip(loaded.items, queries, strict=True):
            texts = outputs.get(item.id)
            rows.append(self._replay_row(item, q, texts))
        return self._output(rows, loaded, ctx)

    def _replay_row(self, item: Item, q: ChoiceQuery, texts: list[str] | None) -> dict[str, Any]:
        base = {"item_id": item.id, "prompt_hash": prompt_hash(q.context),
                "prompt": q.context[-PROMPT_KEEP:], "gold": self.label(q.gold)}
        if not texts:
            return base | {"output": None, "extracted": None, "correct": False, "score": 0.0,
                           "outcome": "missing"}
        picks = [match_choice(t, q.choices) for t in texts]
        scores = [1.0 if p == q.gold else 0.0 for p in picks]
        score = sum(scores) / len(scores)
        first = picks[0]
        outcome = "parse_failure" if first is None else ("pass" if first == q.gold else "fail")
        return base | {"output": texts[0] if len(texts) == 1 else texts,
                       "extracted": None if first is None else self.label(first),
                       "correct": first == q.gold, "score": score, "outcome": outcome}


def match_choice(text: str, choices: list[str]) -> int | None:
    """Index of the choice a generated text starts with (longest match, case-insensitive)."""
    out = " ".join(text.split()).lower()
    best, best_len = None, -1
    for i, choice in enumerate(choices):
        c = " ".join(choice.split()).lower()
        if c and out.startswith(c) and len(c) > best_len and _ends_at_boundary(out, len(c)):
            best, best_len = i, len(c)
    return best


def _ends_at_boundary(text: str, end: int) -> bool:
    return end >= len(text) or not (text[end].isalnum() and text[end - 1].isalnum())


class ChoiceGeneration(GenerationTask):
    """A multiple-choice task under a generative config: its items, few-shot examples and
    notes are the owner task's; prompts come from ``owner.gen_query``, verdicts from the
    config's postprocessor against ``owner.gold_label``."""

    def __init__(self, owner: ChoiceTask) -> None:
        self.owner = owner
        self.spec = owner.spec
        self.load = owner.load  # type: ignore[method-assign]
        self.shots_for = owner.shots_for  # type: ignore[method-assign]
        self.notes = owner.notes  # type: ignore[method-assign]

    def build_queries(self, ctx: TaskContext) -> tuple[Loaded, list[GenQuery]]:
        loaded = self.load_items(ctx)
        queries = []
        for it in loaded.items:
            q = self.owner.gen_query(it, self.fewshot_for(it, loaded, ctx), ctx)
            queries.append(GenQuery(templated_prompt(ctx, q), q.stop, q.max_new_tokens, q.rounds))
        return loaded, queries

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        from sftlab.evaluate.tasks.opencompass import CONFIGS, POSTPROCESSORS

        post = POSTPROCESSORS[str(CONFIGS[str(ctx.config)].postprocess)]
        out = []
        for item, texts in zip(items, samples, strict=True):
            gold = self.owner.gold_label(item)
            verdicts = []
            for text in texts:
                pred = post(text)
                outcome = "parse_failure" if not pred else ("pass" if pred == gold else "fail")
                verdicts.append(SampleScore(pred == gold, pred or None, outcome,
                                            extra={"gold": gold}))
            out.append(verdicts)
        return out

    def _finish(self, loaded: Loaded, queries: list[GenQuery], samples: list[list[str]],
                ctx: TaskContext) -> TaskOutput:
        out = super()._finish(loaded, queries, samples, ctx)
        return self.owner.aggregate(out, loaded, ctx)
