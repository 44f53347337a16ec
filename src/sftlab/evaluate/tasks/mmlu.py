"""MMLU: 57 subjects, four lettered choices, the answer letter by log-likelihood.

Data: ``mmlu_test.csv`` (+ ``mmlu_dev.csv`` for few-shot) with columns
``question, choice0..choice3, answer (0-3 or A-D), subject``, or rows with a
``choices`` list (the hub's ``cais/mmlu`` shape). Few-shot: the first k dev
items of the same subject.

- ``opencompass``, generative (the defaults): 0-shot ``mmlu_zero_shot_gen_47e2c0``:
  ``\\n`` (its empty ``</E>`` begin item still takes a separator) + ``There is a
  single choice question about {subject}. Answer the question by replying A, B, C or
  D.\\nQ: {question}\\nA. ..\\nD. ..\\nLet's think step by step. A: ``, 256 new
  tokens; k-shot ``mmlu_gen_4d595a``: each dev example ``{hint}\\nQuestion:
  {question}\\nA. ..\\nD. ..\\nAnswer: `` and ``{X}\\n``, then the item, joined by
  ``\\n``; ``first_option_postprocess`` extracts the letter.
- ``opencompass``, likelihood (``mmlu_ppl_ac766d``): ``The following are multiple choice
  questions (with answers) about  {subject}.\\n\\n`` (two spaces, as in the
  config), each shot ``{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n``
  joined by ``\\n`` and followed by ``\\n``, then the item ending ``Answer:``;
  choices `` A`` .. `` D``. Headline: plain mean of subject accuracies;
  ``extra["weighted"]``: the item-weighted accuracy.
- ``lm-eval`` (``mmlu`` default template): ``The following are multiple choice
  questions (with answers) about {subject}.\\n\\n``, shots
  ``{question}\\nA. ..\\nD. ..\\nAnswer: X`` joined by ``\\n\\n``; choices `` A``..
  Headline: item-weighted accuracy; ``extra["subject_mean"]``: the plain mean.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.fewshot import first_k
from sftlab.evaluate.tasks.base import ChoiceQuery, GenQuery, Item, TaskContext, TaskOutput
from sftlab.evaluate.tasks.benchmark import Loaded
from sftlab.evaluate.tasks.choice import ChoiceTask

LETTERS = ("A", "B", "C", "D")


def choices_of(doc: dict[str, Any]) -> list[str]:
    if "choices" in doc:
        return [str(c) for c in doc["choices"]]
    return [str(doc[f"choice{i}"]) for i in range(4)]


def answer_of(doc: dict[str, Any]) -> int:
    ans = str(doc["answer"]).strip()
    return LETTERS.index(ans) if ans in LETTERS else int(ans)


def subject_of(item: Item) -> str:
    return str(item.doc.get("subject", ""))


def _question_block(doc: dict[str, Any], strip: bool) -> str:
    q = str(doc["question"]).strip() if strip else str(doc["question"])
    lines = [q] + [f"{L}. {c}" for L, c in zip(LETTERS, choices_of(doc), strict=True)]
    return "\n".join(lines) + "\nAnswer:"


class MMLU(ChoiceTask):
    eval_split = "test"
    fewshot_split = "dev"
    aliases = ("mmlu",)
    hub = HubSource("cais/mmlu", "all", (("test", "test"), ("dev", "dev")))
    labels = LETTERS

    def required_fields(self) -> tuple[str, ...]:
        return ("question", "answer")

    def shots_for(self, item: Item, loaded: Loaded, ctx: TaskContext) -> list[Item]:
        return first_k(loaded.pool, item, ctx.shots, same_group=subject_of)

    def gold_label(self, item: Item) -> str:
        return LETTERS[answer_of(item.doc)]

    def gen_query(self, item: Item, shots: list[Item], ctx: TaskContext) -> GenQuery:
        from sftlab.evaluate.tasks.opencompass import CONFIGS, Round, gen_query

        cfg = CONFIGS[str(ctx.config)]
        hint = (f"There is a single choice question about {subject_of(item).replace('_', ' ')}."
                " Answer the question by replying A, B, C or D.")

        def options(doc: dict[str, Any]) -> str:
            return "".join(f"{L}. {c}\n" for L, c in zip(LETTERS, choices_of(doc), strict=True))

        if cfg.name == "mmlu_zero_shot_gen_47e2c0":
            human = f"{hint}\nQ: {item.doc['question']}\n{options(item.doc)}Let's think step by step. A: "
            return gen_query(["", Round(human)], (), cfg.max_new_tokens or 256)

        def ask(doc: dict[str, Any]) -> str:
            return f"{hint}\nQuestion: {doc['question']}\n{options(doc)}Answer: "

        ices = [Round(ask(s.doc), f"{self.gold_label(s)}\n") for s in shots]
        return gen_query([*ices, "", Round(ask(item.doc))], (), cfg.max_new_tokens or 512)

    def query(self, item: Item, shots: list[Item], fmt: str) -> ChoiceQuery:
        subject = subject_of(item).replace("_", " ")
        if fmt == "opencompass":
            head = f"The following are multiple choice questions (with answers) about  {subject}.\n\n"
            ices = [_question_block(s.doc, False) + f" {LETTERS[answer_of(s.doc)]}\n" for s in shots]
            block = "\n".join(ices) + "\n"  # 0-shot: the config with no examples, as rendered
            context = head + block + _question_block(item.doc, False)
        else:
            head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
            parts = [_question_block(s.doc, True) + f" {LETTERS[answer_of(s.doc)]}" for s in shots]
            context = head + "\n\n".join(parts + [_question_block(item.doc, True)])
        return ChoiceQuery(context, [f" {L}" for L in LETTERS], answer_of(item.doc))

    def aggregate(self, out: TaskOutput, loaded: Loaded, ctx: TaskContext) -> TaskOutput:
        """Per-subject means in ``extra``; opencompass's headline is their plain mean."""
        rows = out.rows
        by_subject: dict[str, list[float]] = defaultdict(list)
        for item, row in zip(loaded.items, rows, strict=True):
            by_subject[subject_of(item)].append(row["score"])
        means = {s: 100.0 * sum(v) / len(v) for s, v in sorted(by_subject.items())}
        macro = sum(means.values()) / len(means)
        # stderr of a mean of subject means: sqrt(sum of per-subject variances of the mean) / S
        var = sum((m / 100) * (1 - m / 100) / max(1, len(by_subject[s]) - 1)
                  for s, m in means.items())
        macro_se = 100.0 * math.sqrt(var) / len(means)
        out.extra["subjects"] = means
        if ctx.format == "opencompass":
            out.extra["weighted"], out.extra["weighted_stderr"] = out.value, out.stderr
            out.value, out.stderr = macro, macro_se
        else:
            out.extra["subject_mean"], out.extra["subject_mean_stderr"] = macro, macro_se
        return out
