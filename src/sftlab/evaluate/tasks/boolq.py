"""BoolQ: a passage and a yes/no question, the answer by log-likelihood.

Data: the dev split (``question, passage, answer`` with a boolean answer, or
``label`` 0/1 as in SuperGLUE); few-shot from the train split.

- ``opencompass``, generative (the defaults): 0-shot ``SuperGLUE_BoolQ_gen_883d50``:
  ``{passage}\\nQuestion: {question}\\nA. Yes\\nB. No\\nAnswer:``; k-shot
  ``SuperGLUE_BoolQ_few_shot_gen_ba58ea``: the examples at evaluation rows 0, 2, 4, ...
  (OpenCompass's ``BoolQDatasetV2`` has no train split, so its FixK retriever reads
  the evaluation file, the item itself included), each that prompt and its label
  ``A`` / ``B``, all joined by ``\\n``; ``first_capital_postprocess`` extracts the
  answer (gold: ``A`` = yes, ``B`` = no).
- ``opencompass``, likelihood (``SuperGLUE_BoolQ_ppl_314b96``): context
  ``{passage}\\nQuestion: {question}?``, choices ``\\nNo`` / ``\\nYes``. Few-shot
  examples at fixed train positions 0, 2, 4, ... (1-shot: 0; 5-shot: 0, 2, 4, 6, 8),
  each ``{passage}\\nQuestion: {question}?\\n{Yes|No}\\n\\n`` before the item.
- ``lm-eval`` (``boolq.yaml``): ``{passage}\\nQuestion: {question}?\\nAnswer:``,
  choices `` no`` / `` yes``; shots (first k of train) joined by ``\\n\\n``.
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.fewshot import first_k, fixed_ids
from sftlab.evaluate.tasks.base import ChoiceQuery, GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.benchmark import Loaded
from sftlab.evaluate.tasks.choice import ChoiceTask


def gold_of(doc: dict[str, Any]) -> int:
    if "answer" in doc:
        ans = doc["answer"]
        if isinstance(ans, str):
            return 1 if ans.strip().lower() in ("true", "yes", "1") else 0
        return int(bool(ans))
    return int(doc["label"])


class BoolQ(ChoiceTask):
    eval_split = "validation"
    fewshot_split = "train"
    aliases = ("boolq",)
    hub = HubSource("google/boolq", None, (("validation", "validation"), ("train", "train")))
    labels = ("no", "yes")

    def required_fields(self) -> tuple[str, ...]:
        return ("question", "passage")

    def shots_for(self, item: Item, loaded: Loaded, ctx: TaskContext) -> list[Item]:
        if ctx.config == "SuperGLUE_BoolQ_few_shot_gen_ba58ea":
            ids = list(range(0, 2 * ctx.shots, 2))
            if ids and ids[-1] >= len(loaded.all_items):
                raise UserError(f"task boolq: {ctx.config} needs evaluation row {ids[-1]}, "
                                f"the data has {len(loaded.all_items)}", where=loaded.eval_path)
            return [loaded.all_items[i] for i in ids]
        if ctx.format == "opencompass":
            return fixed_ids(loaded.pool, item, list(range(0, 2 * ctx.shots, 2)))
        return first_k(loaded.pool, item, ctx.shots)

    def load(self, ctx: TaskContext) -> Loaded:
        """ba58ea draws its examples from the evaluation file: no few-shot split is read."""
        if ctx.config == "SuperGLUE_BoolQ_few_shot_gen_ba58ea":
            from dataclasses import replace

            return super().load(replace(ctx, shots=0))
        return super().load(ctx)

    def notes(self, loaded: Loaded, ctx: TaskContext) -> dict[str, Any]:
        notes = super().notes(loaded, ctx)
        if (ctx.config == "SuperGLUE_BoolQ_few_shot_gen_ba58ea" and ctx.shots
                and loaded.retrieval is None):
            rows = ", ".join(str(i) for i in range(0, 2 * ctx.shots, 2))
            notes["fewshot_source"] = (f"evaluation rows {rows} ({loaded.eval_path}), as "
                                       "OpenCompass's FixKRetriever on BoolQDatasetV2")
        return notes

    def gold_label(self, item: Item) -> str:
        return "A" if gold_of(item.doc) else "B"

    def gen_query(self, item: Item, shots: list[Item], ctx: TaskContext) -> GenQuery:
        from sftlab.evaluate.tasks.opencompass import CONFIGS, Round, gen_query

        def human(doc: dict[str, Any]) -> str:
            return f"{doc['passage']}\nQuestion: {doc['question']}\nA. Yes\nB. No\nAnswer:"

        cfg = CONFIGS[str(ctx.config)]
        if cfg.name == "SuperGLUE_BoolQ_gen_883d50":
            items: list = [Round(human(item.doc))]
        else:
            ices = [Round(human(s.doc), self.gold_label(s)) for s in shots]
            items = [*ices, "", Round(human(item.doc), "")]
        return gen_query(items, (), cfg.max_new_tokens or 512)

    def query(self, item: Item, shots: list[Item], fmt: str) -> ChoiceQuery:
        def text(doc: dict[str, Any]) -> str:
            return f"{doc['passage']}\nQuestion: {doc['question']}?"

        if fmt == "opencompass":
            block = "".join(f"{text(s.doc)}\n{('No', 'Yes')[gold_of(s.doc)]}\n\n" for s in shots)
            return ChoiceQuery(block + text(item.doc), ["\nNo", "\nYes"], gold_of(item.doc))
        parts = [f"{text(s.doc)}\nAnswer: {('no', 'yes')[gold_of(s.doc)]}" for s in shots]
        context = "\n\n".join(parts + [f"{text(item.doc)}\nAnswer:"])
        return ChoiceQuery(context, [" no", " yes"], gold_of(item.doc))
