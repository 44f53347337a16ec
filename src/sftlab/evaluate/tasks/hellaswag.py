"""HellaSwag: pick the ending of a scene description.

Data: the validation split in the original schema (``ctx_a, ctx_b, ctx,
activity_label, endings, label``); few-shot from the train split (first k).

- ``lm-eval`` (``hellaswag.yaml``): query ``preprocess(activity_label + ": " +
  ctx_a + " " + ctx_b.capitalize())``, choices `` {preprocess(ending)}``; shots
  ``query ending`` joined by ``\\n\\n``; ``acc`` and ``acc_norm`` (by characters).
- ``opencompass``, generative (the defaults): 0-shot ``hellaswag_gen_6faab5``:
  ``{ctx}\\nQuestion: Which ending makes the most sense?\\nA. ..\\nD. ..\\nYou may
  choose from 'A', 'B', 'C', 'D'.\\nAnswer:``; k-shot ``hellaswag_10shot_gen_e42710``:
  the hint, then each example ``{ctx}\\nA) ..\\nD) ..\\nWhat is the right
  option?`` and ``{X}\\n``, then the item and an empty BOT turn (``\\n``), all joined
  by ``\\n`` (OpenCompass's base-model joining); ``first_option_postprocess``
  extracts the letter. ``{ctx}`` is the query after its first ``": "``
  (``HellaswagDataset_V2`` / ``HellaswagDatasetwithICE``).
- ``opencompass``, likelihood: 0-shot (``hellaswag_ppl_47bff9``): context ``{ctx}`` (the query
  after its second ``": "``, ``HellaswagDataset``), continuation ``\\n{ending}``, the lowest mean NLL
  over the whole sequence. k-shot (``hellaswag_10shot_ppl_59c85e``): lettered:
  ``Continue the following text without adding any additional information or
  formatting:\\n`` + shots ``{ctx}\\nA) ..\\nB) ..\\nC) ..\\nD) ..\\nWhat is the
  right option?\\n{X}\\n`` joined by ``\\n`` and followed by ``\\n`` + the item;
  choices ``\\nA`` .. ``\\nD``.
"""

from __future__ import annotations

import re
from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.tasks.base import ChoiceQuery, GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.choice import ChoiceTask

LETTERS = ("A", "B", "C", "D")
HINT = "Continue the following text without adding any additional information or formatting:"


def preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag text clean-up."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def query_of(doc: dict[str, Any]) -> str:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return preprocess(doc["activity_label"] + ": " + ctx)


def endings_of(doc: dict[str, Any]) -> list[str]:
    return [preprocess(e) for e in doc["endings"]]


def oc_ctx(doc: dict[str, Any], splits: int = 2) -> str:
    """OpenCompass's context: the query after its first ``splits`` ``": "`` separators
    (``HellaswagDataset``: 2; ``HellaswagDataset_V2`` and ``HellaswagDatasetwithICE``: 1)."""
    return query_of(doc).split(": ", splits)[-1]


def _lettered(doc: dict[str, Any]) -> str:
    options = "\n".join(f"{L}) {e}" for L, e in zip(LETTERS, endings_of(doc), strict=True))
    return f"{oc_ctx(doc, 1)}\n{options}\nWhat is the right option?"


def _gen_human(doc: dict[str, Any]) -> str:
    options = "".join(f"{L}. {e}\n" for L, e in zip(LETTERS, endings_of(doc), strict=True))
    return (f"{oc_ctx(doc, 1)}\nQuestion: Which ending makes the most sense?\n{options}"
            "You may choose from 'A', 'B', 'C', 'D'.\nAnswer:")


class HellaSwag(ChoiceTask):
    eval_split = "validation"
    fewshot_split = "train"
    aliases = ("hellaswag",)
    hub = HubSource("Rowan/hellaswag", None, (("validation", "validation"), ("train", "train")))

    def required_fields(self) -> tuple[str, ...]:
        return ("ctx_a", "ctx_b", "activity_label", "endings", "label")

    def query(self, item: Item, shots: list[Item], fmt: str) -> ChoiceQuery:
        doc, gold = item.doc, int(item.doc["label"])
        if fmt == "lm-eval":
            parts = [f"{query_of(s.doc)} {endings_of(s.doc)[int(s.doc['label'])]}" for s in shots]
            context = "\n\n".join(parts + [query_of(doc)])
            return ChoiceQuery(context, [f" {e}" for e in endings_of(doc)], gold)
        if not shots:
            return ChoiceQuery(oc_ctx(doc), [f"\n{e}" for e in endings_of(doc)], gold,
                               mode="mean_full")
        ices = [f"{_lettered(s.doc)}\n{LETTERS[int(s.doc['label'])]}\n" for s in shots]
        context = f"{HINT}\n" + "\n".join(ices) + "\n" + _lettered(doc)
        return ChoiceQuery(context, [f"\n{L}" for L in LETTERS], gold)

    def label(self, index: int) -> str:
        return LETTERS[index]

    def gold_label(self, item: Item) -> str:
        return LETTERS[int(item.doc["label"])]

    def gen_query(self, item: Item, shots: list[Item], ctx: TaskContext) -> GenQuery:
        from sftlab.evaluate.tasks.opencompass import CONFIGS, Human, Round, gen_query

        cfg = CONFIGS[str(ctx.config)]
        if cfg.name == "hellaswag_gen_6faab5":
            return gen_query([Round(_gen_human(item.doc))], (), cfg.max_new_tokens or 512)
        ices = [Round(_lettered(s.doc), f"{LETTERS[int(s.doc['label'])]}\n") for s in shots]
        items = [Human(f"{HINT}\n"), *ices, "", Round(_lettered(item.doc), "\n")]
        return gen_query(items, (), cfg.max_new_tokens or 512)
