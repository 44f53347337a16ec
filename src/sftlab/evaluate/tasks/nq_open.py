"""NaturalQuestions-open: short factual answers.

Data: the dev split (``question``, ``answer``: a list of gold strings); few-shot
from the train split (first k).

- ``opencompass`` (``nq_open_gen_e93f8a``): rounds ``Q: {question}?`` / ``A: {answer}.\\n``
  per shot, then ``Q: {question}?`` / ``A:``, joined by ``\\n`` as OpenCompass does for a
  base model (so examples are separated by a blank line); stops ``Q:`` and newline for k > 0 (0-shot: no
  stop, first line kept), up to 50 new tokens; correct when a normalised gold is
  a substring of the normalised prediction.
- ``lm-eval`` (``nq_open.yaml``): ``Answer these questions:\\n\\n`` then shots
  ``Q: {question}?\\nA: {answer[0]}`` joined by ``\\n``; stops newline, ``.``,
  ``,``; exact match (case, punctuation and articles ignored) against any gold.
"""

from __future__ import annotations

from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.tasks.base import GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.generation import GenerationTask, SampleScore


def golds_of(doc: dict[str, Any]) -> list[str]:
    ans = doc["answer"]
    return [ans] if isinstance(ans, str) else [str(a) for a in ans]


class NQOpen(GenerationTask):
    eval_split = "validation"
    fewshot_split = "train"
    aliases = ("nq_open", "nq")
    hub = HubSource("google-research-datasets/nq_open", None,
                    (("validation", "validation"), ("train", "train")))
    max_new_tokens = 50

    def required_fields(self) -> tuple[str, ...]:
        return ("question", "answer")

    def query(self, item: Item, shots: list[Item], fmt: str) -> GenQuery:
        q = item.doc["question"]
        if fmt == "opencompass":
            from sftlab.evaluate.tasks.opencompass import Round, gen_query

            ices = [Round(f"Q: {s.doc['question']}?", f"A: {golds_of(s.doc)[0]}.\n") for s in shots]
            final = Round(f"Q: {q}?", "A:")
            items = [*ices, "", final] if shots else [final]
            return gen_query(items, ("Q:", "\n") if shots else (), 50)
        parts = [f"Q: {s.doc['question']}?\nA: {golds_of(s.doc)[0]}" for s in shots]
        prompt = "Answer these questions:\n\n" + "\n".join(parts + [f"Q: {q}?\nA:"])
        return GenQuery(prompt, ("\n", ".", ","), 256)

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        from sftlab.evaluate.metrics import nq_exact_match, nq_substring_match

        out = []
        for item, texts in zip(items, samples, strict=True):
            golds = golds_of(item.doc)
            verdicts = []
            for text in texts:
                if ctx.format == "opencompass":
                    pred = text.strip().split("\n")[0]
                    ok = bool(nq_substring_match(pred, golds))
                else:
                    pred = text.lstrip()
                    ok = bool(nq_exact_match(pred, golds))
                verdicts.append(SampleScore(ok, pred, "pass" if ok else "fail"))
            out.append(verdicts)
        return out
