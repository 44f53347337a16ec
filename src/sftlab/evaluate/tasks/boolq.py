"""BoolQ: a passage and a yes/no question, the answer by log-likelihood.

Data: the dev split (``question, passage, answer`` with a boolean answer, or
``label`` 0/1 as in SuperGLUE); few-shot from the train split.

- ``opencompass`` (``SuperGLUE_BoolQ_ppl_314b96``): context
  ``{passage}\\nQuestion: {question}?``, choices ``\\nNo`` / ``\\nYes``. Few-shot
  examples at fixed train positions 0, 2, 4, ... (1-shot: 0; 5-shot: 0, 2, 4, 6, 8),
  each ``{passage}\\nQuestion: {question}?\\n{Yes|No}\\n\\n`` before the item.
- ``lm-eval`` (``boolq.yaml``): ``{passage}\\nQuestion: {question}?\\nAnswer:``,
  choices `` no`` / `` yes``; shots (first k of train) joined by ``\\n\\n``.
"""

from __future__ import annotations

from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.fewshot import first_k, fixed_ids
from sftlab.evaluate.tasks.base import ChoiceQuery, Item, TaskContext
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
        if ctx.format == "opencompass":
            return fixed_ids(loaded.pool, item, list(range(0, 2 * ctx.shots, 2)))
        return first_k(loaded.pool, item, ctx.shots)

    def query(self, item: Item, shots: list[Item], fmt: str) -> ChoiceQuery:
        def text(doc: dict[str, Any]) -> str:
            return f"{doc['passage']}\nQuestion: {doc['question']}?"

        if fmt == "opencompass":
            block = "".join(f"{text(s.doc)}\n{('No', 'Yes')[gold_of(s.doc)]}\n\n" for s in shots)
            return ChoiceQuery(block + text(item.doc), ["\nNo", "\nYes"], gold_of(item.doc))
        parts = [f"{text(s.doc)}\nAnswer: {('no', 'yes')[gold_of(s.doc)]}" for s in shots]
        context = "\n\n".join(parts + [f"{text(item.doc)}\nAnswer:"])
        return ChoiceQuery(context, [" no", " yes"], gold_of(item.doc))
