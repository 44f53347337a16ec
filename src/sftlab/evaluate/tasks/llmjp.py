"""The ``llm-jp-eval`` format: llm-jp-eval v1.3's datasets as tasks, and the suite.

A dataset task is composed of three parts, none of them a subclass hook: the
dataset's declarative row (:data:`~sftlab.evaluate.llmjp.datasets.DATASETS`: data,
instruction, output length, metrics), the prompt function
(:func:`~sftlab.evaluate.llmjp.datasets.build_prompt`) and the scorer
(:func:`score_dataset` over :mod:`sftlab.evaluate.llmjp.metrics`).

- prompt: v1.3's Japanese header, ``### 指示:``, the first k train samples as
  ``### 入力:`` / ``### 応答:`` pairs (default 4), then the item;
- generation: greedy, up to the dataset's output length in new tokens;
- prediction: NFKC of the text before the first blank line (stripped); gold: NFKC;
- value: the headline metric in percent (BLEU on its 0-100 scale).

``--task llm-jp-eval`` runs every dataset whose files are under ``--data`` (a folder,
searched recursively), and reports each category (the mean of its datasets' headline
metrics) and ``AVR`` (the mean of the categories that have data). A category without
data is missing, never 0; ``extra["AVR_v1.3"]`` is v1.3's own average, which counts an
empty category as 0. Replay ids: ``<dataset>/<index>`` for the suite, ``<index>`` for
one dataset (the 0-based row of the test split as sftlab builds it).

MT: v1.3 averages ``comet_wmt22`` in the MT category. sftlab computes BLEU (v1.3's
way) always, and COMET only when ``comet_model`` (a local Unbabel/wmt22-comet-da
checkpoint, with the ``unbabel-comet`` package) is given; without it the MT category
uses BLEU / 100 x 100 and ``notes["category_metrics"]`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import GenerateRequest
from sftlab.evaluate.llmjp import metrics as M
from sftlab.evaluate.llmjp.datasets import (
    CATEGORIES,
    DATASETS,
    Dataset,
    Sample,
    Splits,
    build_prompt,
    list_files,
    load_dataset,
)
from sftlab.evaluate.tasks.base import (
    Task,
    TaskContext,
    TaskOutput,
    count_outcomes,
    percent_metric,
    prompt_hash,
)

FORMAT = "llm-jp-eval"
PROMPT_KEEP = 4000


@dataclass
class Prepared:
    """One dataset ready to run: its spec, splits, evaluation samples and prompts."""

    ds: Dataset
    splits: Splits
    items: list[Sample]
    prompts: list[str]
    max_new_tokens: int


def _shots(splits: Splits, index: int, k: int) -> list[Sample]:
    if splits.train:
        return splits.train[:k]
    return [s for i, s in enumerate(splits.test[: k + 1]) if i != index][:k]


def prepare_dataset(ds: Dataset, files: list[Path], ctx: TaskContext) -> Prepared | None:
    """Read ``ds`` from ``files`` and build every prompt (None when its files are absent)."""
    splits = load_dataset(ds, files)
    if splits is None:
        return None
    instruction = splits.instruction or ds.instruction
    if not instruction:
        raise UserError(f"llm-jp-eval {ds.name}: no instruction (give llm-jp-eval's "
                        "preprocessed evaluation files)")
    items = splits.test[: ctx.limit] if ctx.limit else splits.test
    if not items:
        raise UserError(f"llm-jp-eval {ds.name}: no test samples", where=", ".join(splits.sources))
    prompts = [build_prompt(instruction, _shots(splits, i, ctx.shots), s.input)
               for i, s in enumerate(items)]
    if ctx.template is not None:
        from sftlab.evaluate.tasks.benchmark import render_with_template

        prompts = [render_with_template(ctx.template, p) for p in prompts]
    length = int(splits.output_length or ds.output_length)
    if ctx.options.get("max_new_tokens"):  # a cap (e.g. smoke runs), never a raise
        length = min(length, int(ctx.options["max_new_tokens"]))
    return Prepared(ds, splits, items, prompts, length)


def generate(backend: Any, prepared: list[Prepared], seed: int) -> list[list[str]]:
    """Greedy outputs for every prompt of every dataset, in one backend call."""
    requests = [GenerateRequest(p, (), ds.max_new_tokens, 0.0, 1.0, 1, seed)
                for ds in prepared for p in ds.prompts]
    texts = [r.texts[0] if r.texts else "" for r in backend.generate(requests)]
    out, start = [], 0
    for ds in prepared:
        out.append(texts[start: start + len(ds.prompts)])
        start += len(ds.prompts)
    return out


def _comet(ds: Prepared, preds: list[str], golds: list[str], model_path: str) -> float:
    try:
        from comet import load_from_checkpoint
    except ImportError:
        raise UserError("comet_model needs the unbabel-comet package "
                        "(pip install unbabel-comet)") from None
    model = load_from_checkpoint(model_path)
    data = [{"src": s.input, "mt": p, "ref": g} for s, p, g in zip(ds.items, preds, golds,
                                                                  strict=True)]
    return float(model.predict(data, batch_size=8, gpus=0, progress_bar=False).system_score)


def score_dataset(p: Prepared, texts: list[str | None], options: dict[str, Any],
                  id_prefix: str = "") -> TaskOutput:
    """Per-item rows and the dataset's metrics, v1.3's way (``None`` = no output)."""
    ds = p.ds
    preds = [M.normalise(t) if t is not None else "" for t in texts]
    golds = [M.normalise_gold(s.output) for s in p.items]
    rows, item_scores = [], []
    for i, (prompt, text, pred, gold) in enumerate(
            zip(p.prompts, texts, preds, golds, strict=True)):
        score = _item_score(ds, pred, gold)
        item_scores.append(score)
        rows.append({"item_id": f"{id_prefix}{i}", "dataset": ds.name, "category": ds.category,
                     "prompt_hash": prompt_hash(prompt),
                     "prompt": prompt[-PROMPT_KEEP:], "output": text, "extracted": pred,
                     "gold": gold, "correct": pred == gold, "score": score,
                     "outcome": "missing" if text is None else ("pass" if pred == gold else "fail")})
    values = {m: _metric_value(ds, m, preds, golds, item_scores) for m in ds.metrics}
    if ds.category == "MT" and options.get("comet_model"):
        values["comet_wmt22"] = 100.0 * _comet(p, preds, golds, str(options["comet_model"]))
    headline = ds.metric
    stderr = float("nan")  # corpus-level metrics have no item standard error
    if item_scores and item_scores[0] is not None:
        stderr = percent_metric(item_scores)[1]
    extra = {m: v for m, v in values.items() if m != headline}
    if headline in M.BLEU_METRICS:
        extra["sentence_bleu"] = mean(M.sentence_bleu(a, b, ds.lang) for a, b in zip(preds, golds,
                                                                                     strict=True))
    notes: dict[str, Any] = {"data": p.splits.sources, "output_length": p.max_new_tokens}
    if p.splits.fewshot_note:
        notes["fewshot_source"] = p.splits.fewshot_note
    return TaskOutput(headline, values[headline], stderr, len(rows), rows, count_outcomes(rows),
                      extra, notes)


def _item_score(ds: Dataset, pred: str, gold: str) -> float | None:
    """The item's share of the headline (0-1; BLEU items on their 0-100 scale / 100)."""
    if ds.metric in M.ITEM_METRICS:
        return M.ITEM_METRICS[ds.metric](pred, gold)
    if ds.metric in M.BLEU_METRICS:
        return M.bleu_item(pred, gold, ds.lang) / 100.0
    return None  # corpus-level (pearson): no per-item share


def _metric_value(ds: Dataset, metric: str, preds: list[str], golds: list[str],
                  item_scores: list[float | None]) -> float:
    """A metric in percent (BLEU: 0-100)."""
    if metric == ds.metric and metric in M.ITEM_METRICS:
        return 100.0 * mean(item_scores)
    if metric in M.ITEM_METRICS:
        return 100.0 * mean(M.ITEM_METRICS[metric](a, b) for a, b in zip(preds, golds, strict=True))
    if metric in M.CORPUS_METRICS:
        return 100.0 * M.correlation(metric, preds, golds)
    if metric in M.BLEU_METRICS:
        return mean(M.bleu_item(a, b, ds.lang) for a, b in zip(preds, golds, strict=True))
    raise UserError(f"llm-jp-eval {ds.name}: unsupported metric {metric!r}")


def _check_format(task: Task, ctx: TaskContext) -> None:
    if ctx.format not in task.formats:
        raise UserError(f"task {task.name}: unknown format {ctx.format!r} "
                        f"(choose from {', '.join(task.formats)})")
    if ctx.shots < 0:
        raise UserError(f"task {task.name}: unsupported shot count {ctx.shots}")
    if ctx.limit is not None and ctx.limit < 1:
        raise UserError(f"task {task.name}: --limit must be >= 1, got {ctx.limit}")


def _files(task: Task, ctx: TaskContext) -> list[Path]:
    if not ctx.data:
        raise UserError(f"task {task.name}: --data is required (a native file or a folder; "
                        "see `sftlab eval --help`)")
    return list_files(ctx.data)


class DatasetTask(Task):
    """One llm-jp-eval dataset (its spec is ``DATASETS[self.name]``)."""

    def check(self, ctx: TaskContext) -> None:
        _check_format(self, ctx)

    def preflight(self, ctx: TaskContext) -> None:
        self._prepared(ctx)

    def _prepared(self, ctx: TaskContext) -> Prepared:
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is ctx:
            return cached[1]
        self.check(ctx)
        ds = DATASETS[self.name]
        prepared = prepare_dataset(ds, _files(self, ctx), ctx)
        if prepared is None:
            raise UserError(f"llm-jp-eval {ds.name}: its files are not in the data "
                            f"(expected {ds.source}, or llm-jp-eval's evaluation/test/"
                            f"{ds.name}.json)", where=str(ctx.data))
        self._cache = (ctx, prepared)
        return prepared

    def run(self, backend: Any, ctx: TaskContext) -> TaskOutput:
        prepared = self._prepared(ctx)
        [texts] = generate(backend, [prepared], ctx.seed)
        return score_dataset(prepared, list(texts), ctx.options)

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        prepared = self._prepared(ctx)
        texts = [(outputs.get(str(i)) or [None])[0] for i in range(len(prepared.items))]
        return score_dataset(prepared, texts, ctx.options)


# ---------------------------------------------------------------- the suite


def category_scores(values: dict[str, float]) -> dict[str, float | None]:
    """Category -> mean of its datasets' values (None when none of them has a value)."""
    out: dict[str, float | None] = {}
    for code in CATEGORIES:
        present = [v for name, v in values.items()
                   if DATASETS[name].category == code and v is not None and not math.isnan(v)]
        out[code] = mean(present) if present else None
    return out


def averages(categories: dict[str, float | None]) -> tuple[float, float]:
    """(AVR over categories with data, v1.3's AVG counting an empty category as 0)."""
    present = [v for v in categories.values() if v is not None]
    avr = mean(present) if present else float("nan")
    return avr, mean(v if v is not None else 0.0 for v in categories.values())


class SuiteTask(Task):
    """``llm-jp-eval``: every dataset whose data is present, with categories and AVR."""

    def check(self, ctx: TaskContext) -> None:
        _check_format(self, ctx)

    def preflight(self, ctx: TaskContext) -> None:
        self._prepared(ctx)

    def _prepared(self, ctx: TaskContext) -> list[Prepared]:
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is ctx:
            return cached[1]
        self.check(ctx)
        files = _files(self, ctx)
        wanted = ctx.options.get("datasets") or list(DATASETS)
        prepared = [p for name in wanted
                    if (p := prepare_dataset(DATASETS[name], files, ctx)) is not None]
        if not prepared:
            raise UserError("llm-jp-eval: no dataset's files found in the data", where=str(ctx.data))
        self._cache = (ctx, prepared)
        return prepared

    def run(self, backend: Any, ctx: TaskContext) -> TaskOutput:
        prepared = self._prepared(ctx)
        return self._finish(prepared, generate(backend, prepared, ctx.seed), ctx)

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        prepared = self._prepared(ctx)
        texts = [[(outputs.get(f"{p.ds.name}/{i}") or [None])[0] for i in range(len(p.items))]
                 for p in prepared]
        return self._finish(prepared, texts, ctx)

    def _finish(self, prepared: list[Prepared], texts: list[list[str | None]],
                ctx: TaskContext) -> TaskOutput:
        outs = {p.ds.name: score_dataset(p, list(t), ctx.options, f"{p.ds.name}/")
                for p, t in zip(prepared, texts, strict=True)}
        cat_metric = {}
        values = {}
        for name, out in outs.items():
            use = "comet_wmt22" if "comet_wmt22" in out.extra else out.metric
            cat_metric[name] = use
            values[name] = out.extra[use] if use != out.metric else out.value
        categories = category_scores(values)
        avr, avr_v13 = averages(categories)
        from sftlab.evaluate.tasks.registry import TASKS

        results = [{"task": name, "shots": ctx.shots, "format": FORMAT,
                    "version": TASKS[name].version,
                    "metric": out.metric, "value": out.value, "stderr": out.stderr, "n": out.n,
                    "outcomes": out.outcomes} for name, out in outs.items()]
        results += [{"task": self.name, "shots": ctx.shots, "format": FORMAT,
                     "version": self.version, "metric": code, "value": value, "stderr": None,
                     "outcomes": {},
                     "n": sum(o.n for n, o in outs.items() if DATASETS[n].category == code)}
                    for code, value in categories.items()]
        extra = {"datasets": {n: {"metric": o.metric, "value": o.value, "n": o.n, **o.extra}
                              for n, o in outs.items()},
                 "categories": categories, "AVR_v1.3": avr_v13, "results": results}
        notes = {"datasets": {n: o.notes for n, o in outs.items()},
                 "category_metrics": cat_metric,
                 "missing_categories": [c for c, v in categories.items() if v is None]}
        rows = [r for o in outs.values() for r in o.rows]
        return TaskOutput("AVR", avr, float("nan"), len(rows), rows, count_outcomes(rows),
                          extra, notes)


def dataset_task() -> DatasetTask:
    return DatasetTask()
