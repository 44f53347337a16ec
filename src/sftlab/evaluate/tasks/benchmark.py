"""Shared machinery of the built-in benchmarks: loading items and picking few-shot examples.

A :class:`BenchmarkTask` declares where its data lives (``eval_split``,
``fewshot_split``, ``hub``, file-name ``aliases``) and how rows become
:class:`Item` objects (``make_items``); ``load(ctx)`` then returns the
evaluation items (``--limit`` applied) and the few-shot pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.datafiles import HubSource, load_splits
from sftlab.evaluate.fewshot import FewshotPool, first_k
from sftlab.evaluate.tasks.base import Item, Task, TaskContext


@dataclass
class Loaded:
    """A task's evaluation items, its few-shot pool and where both came from."""

    items: list[Item]
    pool: FewshotPool
    eval_path: str
    all_items: list[Item] = field(default_factory=list)  # the whole evaluation split (no limit)


def render_with_template(template: str | None, prompt: str) -> str:
    """The task prompt placed as the study template's ``{instruction}`` (text before ``{response}``)."""
    if template is None:
        return prompt
    from sftlab.study.template import render_prompt

    return render_prompt(template, prompt)


def templated_prompt(ctx: TaskContext, query: Any) -> str:
    """A generation query's prompt under the study template: as the ``{instruction}``
    (``template_mode: instruction``), or each OpenCompass round wrapped by the template
    made a meta template (``rounds``, opencompass format; ``lm-eval`` prompts have no
    rounds and stay in instruction mode)."""
    if ctx.template is None:
        return query.prompt
    if ctx.template_mode == "rounds" and ctx.format == "opencompass":
        from sftlab.evaluate.tasks.opencompass import MetaTemplate, render

        if query.rounds is None:
            raise UserError(f"template_mode rounds: this {ctx.format} prompt has no rounds "
                            f"(config {ctx.config}); use template_mode instruction")
        return render(query.rounds, MetaTemplate.from_template(ctx.template))
    return render_with_template(ctx.template, query.prompt)


class BenchmarkTask(Task):
    """A benchmark read from native files (or the hub) with a few-shot split."""

    eval_split: str = "test"
    fewshot_split: str | None = "train"
    aliases: tuple[str, ...] = ()
    hub: HubSource | None = None

    def make_items(self, rows: list[dict[str, Any]], split: str) -> list[Item]:
        """Rows -> items; the id is the 0-based row index unless the task overrides."""
        return [Item(str(i), row) for i, row in enumerate(rows)]

    def required_fields(self) -> tuple[str, ...]:
        """Fields every row must have (checked when loading)."""
        return ()

    def _check_rows(self, rows: list[dict[str, Any]], where: str) -> None:
        need = self.required_fields()
        for i, row in enumerate(rows[:50]):
            missing = [f for f in need if f not in row]
            if missing:
                raise UserError(f"task {self.name}: row {i} lacks field(s) {', '.join(missing)} "
                                f"(expected fields: {', '.join(need)})", where=where)

    def load(self, ctx: TaskContext) -> Loaded:
        """Evaluation items (first ``ctx.limit``) and the few-shot pool."""
        splits = load_splits(ctx.data, eval_split=self.eval_split,
                             fewshot_split=self.fewshot_split if ctx.shots else None,
                             task_aliases=self.aliases or (self.name,), hub=self.hub)
        if not splits.eval_rows:
            raise UserError(f"task {self.name}: no items in the data", where=splits.eval_path)
        self._check_rows(splits.eval_rows, splits.eval_path)
        all_items = self.make_items(splits.eval_rows, self.eval_split)
        items = self.select_eval(all_items)
        if not items:
            raise UserError(f"task {self.name}: no items of the {self.eval_split} split in the data",
                            where=splits.eval_path)
        if ctx.limit is not None:
            items = items[: ctx.limit]
        if splits.fewshot_rows is not None:
            self._check_rows(splits.fewshot_rows, str(splits.fewshot_path))
            pool = FewshotPool(self.make_items(splits.fewshot_rows, self.fewshot_split or ""),
                               from_eval=False, source=f"{self.fewshot_split} split "
                               f"({splits.fewshot_path})")
        else:
            pool = FewshotPool(all_items, from_eval=True, source=splits.eval_path)
        return Loaded(items, pool, splits.eval_path, all_items)

    def build(self, ctx: TaskContext) -> tuple[Loaded, list[Any]]:
        """Items and their queries for ``ctx``, built once (``preflight`` builds them before
        the model loads; ``run`` and ``replay`` reuse them)."""
        cached = getattr(self, "_built", None)
        if cached is not None and cached[0] is ctx:
            return cached[1]
        built = self.build_queries(ctx)
        self._built = (ctx, built)
        return built

    def build_queries(self, ctx: TaskContext) -> tuple[Loaded, list[Any]]:
        """Load the items and build one query per item (the task families implement it)."""
        raise NotImplementedError

    def preflight(self, ctx: TaskContext) -> None:
        """Check the settings, read the data and build every prompt (no model needed)."""
        self.build(ctx)

    def select_eval(self, items: list[Item]) -> list[Item]:
        """The evaluation items among everything read (all by default)."""
        return items

    def shots_for(self, item: Item, loaded: Loaded, ctx: TaskContext) -> list[Item]:
        """Few-shot examples for ``item`` (default: the first k of the pool)."""
        return first_k(loaded.pool, item, ctx.shots)

    def notes(self, loaded: Loaded, ctx: TaskContext) -> dict[str, Any]:
        """What the task output records about data and few-shot sources."""
        notes: dict[str, Any] = {"data": loaded.eval_path}
        if ctx.shots:
            notes["fewshot_source"] = loaded.pool.note()
        return notes
