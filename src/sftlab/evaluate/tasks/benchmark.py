"""Shared machinery of the built-in benchmarks: loading items and picking few-shot examples.

A :class:`BenchmarkTask` declares where its data lives (``eval_split``,
``fewshot_split``, ``hub``, file-name ``aliases``) and how rows become
:class:`Item` objects (``make_items``); ``load(ctx)`` then returns the
evaluation items (``--limit`` applied) and the few-shot pool.

Few-shot examples are the task's own choice (``shots_for``: first k, fixed ids,
built-in exemplars) unless the task options hold retrieval settings
(``fewshot: retrieval``, :mod:`sftlab.evaluate.retrieval`): then ``load_items``
retrieves each item's examples once, ``fewshot_for`` returns them, and every
prediction row records their pool ids (``fewshot_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.datafiles import HubSource, load_splits
from sftlab.evaluate.fewshot import FewshotPool, first_k
from sftlab.evaluate.retrieval import Retrieval, retrieval_of
from sftlab.evaluate.tasks.base import Item, Task, TaskContext


@dataclass
class Retrieved:
    """Each item's retrieved few-shot examples (by item id) and how they were chosen."""

    shots: dict[str, list[Item]]
    note: str  # the task output's ``fewshot_source``
    record: dict[str, Any]  # embedder, its sha256, pool, batch size (the task output's notes)


@dataclass
class Loaded:
    """A task's evaluation items, its few-shot pool and where both came from."""

    items: list[Item]
    pool: FewshotPool
    eval_path: str
    all_items: list[Item] = field(default_factory=list)  # the whole evaluation split (no limit)
    retrieval: Retrieved | None = None  # fewshot: retrieval


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

    def retrieval_shots(self, fmt: str) -> tuple[int, ...] | None:
        """Shot counts with retrieved examples (default: the format's ``allowed_shots``)."""
        return self.allowed_shots(fmt)

    def shot_counts(self, ctx: TaskContext) -> tuple[int, ...] | None:
        if retrieval_of(ctx.options) is not None:
            return self.retrieval_shots(ctx.format)
        return self.allowed_shots(ctx.format)

    def load_items(self, ctx: TaskContext) -> Loaded:
        """``load(ctx)``, then each item's few-shot examples retrieved when the options
        ask for retrieval (and the shot count is not 0)."""
        loaded = self.load(ctx)
        settings = retrieval_of(ctx.options)
        if settings is not None and ctx.shots:
            loaded.retrieval = self.retrieve(loaded, settings, ctx.shots)
        return loaded

    def retrieve(self, loaded: Loaded, settings: Retrieval, k: int) -> Retrieved:
        """The ``k`` pool items nearest to each item by question text (the registry's
        ``retrieval_field``); the pool is ``settings.pool``, else the task's own."""
        from sftlab.evaluate.retrieval import Embedder, choose, embedder_folder

        field_name = self.spec.retrieval_field
        if field_name is None:  # Task.check refuses this first
            raise UserError(f"task {self.name}: fewshot retrieval is not supported")
        folder = embedder_folder(settings.embedder)
        pool = self._retrieval_pool(settings) if settings.pool else loaded.pool
        embedder = Embedder(folder, settings.batch_size)
        chosen = choose([it.id for it in loaded.items],
                        [str(it.doc[field_name]) for it in loaded.items],
                        [it.id for it in pool.items],
                        [str(it.doc[field_name]) for it in pool.items], k, embedder,
                        pool_is_eval=pool.from_eval)
        shots = {it.id: [pool.items[j] for j in picks]
                 for it, picks in zip(loaded.items, chosen, strict=True)}
        record = {"embedder": settings.embedder, "embedder_sha256": embedder.key,
                  "pool": pool.note(), "field": field_name, "k": k,
                  "batch_size": settings.batch_size}
        return Retrieved(shots, f"retrieved by {settings.embedder} from {pool.note()}", record)

    def _retrieval_pool(self, settings: Retrieval) -> FewshotPool:
        """The pool file of the retrieval settings as task items (``fields`` renames
        the file's columns to the task's field names)."""
        from pathlib import Path

        from sftlab.evaluate.datafiles import read_records
        from sftlab.fingerprint import file_sha256

        assert settings.pool is not None
        path = Path(settings.pool.path).expanduser()
        if not path.is_file():
            raise UserError(f"retrieval.pool.path: no such file '{path}'")
        rows = read_records(path)
        if not rows:
            raise UserError("retrieval.pool: the file has no rows", where=str(path))
        renames = settings.pool.fields or {}
        missing = sorted({col for col in renames.values() if col not in rows[0]})
        if missing:
            raise UserError(f"retrieval.pool.fields: column(s) {', '.join(missing)} not in the "
                            f"file (it has: {', '.join(map(str, rows[0]))})", where=str(path))
        rows = [{**row, **{name: row.get(col) for name, col in renames.items()}} for row in rows]
        self._check_rows(rows, str(path))
        return FewshotPool(self.make_items(rows, "pool"), from_eval=False,
                           source=f"{path} (sha256 {file_sha256(path)[:12]})")

    def fewshot_for(self, item: Item, loaded: Loaded, ctx: TaskContext) -> list[Item]:
        """The item's few-shot examples: retrieved ones, else the task's own (``shots_for``)."""
        if loaded.retrieval is not None:
            return loaded.retrieval.shots[item.id]
        return self.shots_for(item, loaded, ctx)

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
        if loaded.retrieval is not None:
            notes["fewshot_source"] = loaded.retrieval.note
            notes["retrieval"] = loaded.retrieval.record
        return notes


def with_fewshot_ids(rows: list[dict[str, Any]], loaded: Loaded) -> list[dict[str, Any]]:
    """The prediction rows, each with its retrieved examples' pool ids (``fewshot_ids``)
    when the examples were retrieved."""
    if loaded.retrieval is not None:
        for row in rows:
            row["fewshot_ids"] = [s.id for s in loaded.retrieval.shots[row["item_id"]]]
    return rows
