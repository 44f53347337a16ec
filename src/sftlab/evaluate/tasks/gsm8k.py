"""GSM8K: grade-school math word problems, answered with a number.

Data: ``gsm8k_test.jsonl`` (+ ``gsm8k_train.jsonl`` for few-shot) with
``question`` and ``answer`` (reasoning, last line ``#### N``).

- ``opencompass`` 0-shot (``gsm8k_0shot_gen_a58960``): ``{question}\\nPlease reason
  step by step, and put your final answer within \\boxed{}.``, no stop, 512 tokens.
- ``opencompass`` k-shot (``gsm8k_gen_1d7fe4``): ``Question: {q}\\nLet's think step by
  step\\nAnswer:``; 4-shot uses the config's four fixed exemplars; other k use
  the first k train items (their ``#### N`` line written as ``The answer is N``).
  Rounds are joined by ``\\n`` as OpenCompass does for base models. The answer
  is the last number of the output cut at ``Question:``.
- ``lm-eval`` (``gsm8k.yaml``): shots ``Question: {q}\\nAnswer: {answer}`` (first k
  of train) joined by ``\\n\\n``, then ``Question: {q}\\nAnswer:``; stops
  ``Question:``, ``</s>``, ``<|im_end|>``; headline strict ``#### N`` match,
  ``extra["flexible"]``: the last number.
"""

from __future__ import annotations

from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.tasks.base import GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.generation import GenerationTask, SampleScore

OC_EXEMPLARS: tuple[tuple[str, str], ...] = (
    ("Angelo and Melanie want to plan how many hours over the next week they should study together for their test next week. They have 2 chapters of their textbook to study and 4 worksheets to memorize. They figure out that they should dedicate 3 hours to each chapter of their textbook and 1.5 hours for each worksheet. If they plan to study no more than 4 hours each day, how many days should they plan to study total over the next week if they take a 10-minute break every hour, include 3 10-minute snack breaks each day, and 30 minutes for lunch each day?",  # noqa: E501
     "Angelo and Melanie think they should dedicate 3 hours to each of the 2 chapters, 3 hours x 2 chapters = 6 hours total.\nFor the worksheets they plan to dedicate 1.5 hours for each worksheet, 1.5 hours x 4 worksheets = 6 hours total.\nAngelo and Melanie need to start with planning 12 hours to study, at 4 hours a day, 12 / 4 = 3 days.\nHowever, they need to include time for breaks and lunch. Every hour they want to include a 10-minute break, so 12 total hours x 10 minutes = 120 extra minutes for breaks.\nThey also want to include 3 10-minute snack breaks, 3 x 10 minutes = 30 minutes.\nAnd they want to include 30 minutes for lunch each day, so 120 minutes for breaks + 30 minutes for snack breaks + 30 minutes for lunch = 180 minutes, or 180 / 60 minutes per hour = 3 extra hours.\nSo Angelo and Melanie want to plan 12 hours to study + 3 hours of breaks = 15 hours total.\nThey want to study no more than 4 hours each day, 15 hours / 4 hours each day = 3.75\nThey will need to plan to study 4 days to allow for all the time they need.\nThe answer is 4\n"),  # noqa: E501
    ("Mark's basketball team scores 25 2 pointers, 8 3 pointers and 10 free throws.  Their opponents score double the 2 pointers but half the 3 pointers and free throws.  What's the total number of points scored by both teams added together?",  # noqa: E501
     "Mark's team scores 25 2 pointers, meaning they scored 25*2= 50 points in 2 pointers.\nHis team also scores 6 3 pointers, meaning they scored 8*3= 24 points in 3 pointers\nThey scored 10 free throws, and free throws count as one point so they scored 10*1=10 points in free throws.\nAll together his team scored 50+24+10= 84 points\nMark's opponents scored double his team's number of 2 pointers, meaning they scored 50*2=100 points in 2 pointers.\nHis opponents scored half his team's number of 3 pointers, meaning they scored 24/2= 12 points in 3 pointers.\nThey also scored half Mark's team's points in free throws, meaning they scored 10/2=5 points in free throws.\nAll together Mark's opponents scored 100+12+5=117 points\nThe total score for the game is both team's scores added together, so it is 84+117=201 points\nThe answer is 201\n"),  # noqa: E501
    ("Bella has two times as many marbles as frisbees. She also has 20 more frisbees than deck cards. If she buys 2/5 times more of each item, what would be the total number of the items she will have if she currently has 60 marbles?",  # noqa: E501
     "When Bella buys 2/5 times more marbles, she'll have increased the number of marbles by 2/5*60 = 24\nThe total number of marbles she'll have is 60+24 = 84\nIf Bella currently has 60 marbles, and she has two times as many marbles as frisbees, she has 60/2 = 30 frisbees.\nIf Bella buys 2/5 times more frisbees, she'll have 2/5*30 = 12 more frisbees.\nThe total number of frisbees she'll have will increase to 30+12 = 42\nBella also has 20 more frisbees than deck cards, meaning she has 30-20 = 10 deck cards\nIf she buys 2/5 times more deck cards, she'll have 2/5*10 = 4 more deck cards.\nThe total number of deck cards she'll have is 10+4 = 14\nTogether, Bella will have a total of 14+42+84 = 140 items\nThe answer is 140\n"),  # noqa: E501
    ("A group of 4 fruit baskets contains 9 apples, 15 oranges, and 14 bananas in the first three baskets and 2 less of each fruit in the fourth basket. How many fruits are there?",  # noqa: E501
     "For the first three baskets, the number of apples and oranges in one basket is 9+15=24\nIn total, together with bananas, the number of fruits in one basket is 24+14=38 for the first three baskets.\nSince there are three baskets each having 38 fruits, there are 3*38=114 fruits in the first three baskets.\nThe number of apples in the fourth basket is 9-2=7\nThere are also 15-2=13 oranges in the fourth basket\nThe combined number of oranges and apples in the fourth basket is 13+7=20\nThe fourth basket also contains 14-2=12 bananas.\nIn total, the fourth basket has 20+12=32 fruits.\nThe four baskets together have 32+114=146 fruits.\nThe answer is 146\n"),  # noqa: E501
)


OC_ZERO_SHOT_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def _oc_human(question: str) -> str:
    return f"Question: {question}\nLet's think step by step\nAnswer:"


def _oc_bot(answer: str) -> str:
    reasoning, _, final = answer.rpartition("####")
    return f"{reasoning.strip()}\nThe answer is {final.strip()}\n"


class GSM8K(GenerationTask):
    eval_split = "test"
    fewshot_split = "train"
    aliases = ("gsm8k",)
    hub = HubSource("openai/gsm8k", "main", (("test", "test"), ("train", "train")))
    max_new_tokens = 512
    votes = True  # cons@K: the extracted numbers compared by Math-Verify

    def required_fields(self) -> tuple[str, ...]:
        return ("question", "answer")

    def shots_for(self, item: Item, loaded: Any, ctx: TaskContext) -> list[Item]:
        if ctx.format == "opencompass" and ctx.shots == len(OC_EXEMPLARS):
            return [Item(f"oc-{i}", {"question": q, "oc_bot": a})
                    for i, (q, a) in enumerate(OC_EXEMPLARS)]
        return super().shots_for(item, loaded, ctx)

    def notes(self, loaded: Any, ctx: TaskContext) -> dict[str, Any]:
        notes = super().notes(loaded, ctx)
        if loaded.retrieval is None and ctx.format == "opencompass" and ctx.shots == len(OC_EXEMPLARS):
            notes["fewshot_source"] = "built-in gsm8k_gen_1d7fe4 exemplars"
        return notes

    def query(self, item: Item, shots: list[Item], fmt: str) -> GenQuery:
        from sftlab.evaluate.tasks.opencompass import Round, gen_query

        if fmt == "opencompass" and not shots:
            return gen_query([Round(item.doc["question"] + OC_ZERO_SHOT_SUFFIX)], (), 512)
        if fmt == "opencompass":
            rounds = [Round(_oc_human(s.doc["question"]),
                            s.doc.get("oc_bot") or _oc_bot(s.doc["answer"])) for s in shots]
            return gen_query([*rounds, Round(_oc_human(item.doc["question"]))], ("Question:",), 512)
        parts = [f"Question: {s.doc['question']}\nAnswer: {s.doc['answer']}" for s in shots]
        prompt = "\n\n".join(parts + [f"Question: {item.doc['question']}\nAnswer:"])
        return GenQuery(prompt, ("Question:", "</s>", "<|im_end|>"), 256)

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        from sftlab.evaluate.metrics import gsm8k_extract, gsm8k_match

        fmt = ctx.format
        out = []
        for item, texts in zip(items, samples, strict=True):
            gold = str(item.doc["answer"])
            verdicts = []
            for text in texts:
                found = gsm8k_extract(text, fmt)
                extra = None
                if fmt == "opencompass":  # headline: OpenCompass's; secondary: separators fixed
                    pred = found["accuracy"]
                    tolerant = gsm8k_extract(text, fmt, separators=True)["accuracy"]
                    extra = {"separator_tolerant": tolerant,
                             "separator_tolerant_correct": gsm8k_match(tolerant, gold, fmt)}
                else:
                    pred, flex = found["strict-match"], found["flexible-extract"]
                    extra = {"flexible": flex, "flexible_correct": gsm8k_match(flex, gold, fmt)}
                ok = gsm8k_match(pred, gold, fmt)
                outcome = "parse_failure" if pred is None else ("pass" if ok else "fail")
                verdicts.append(SampleScore(ok, pred, outcome, extra=extra))
            out.append(verdicts)
        return out

    def extra_metrics(self, rows, samples, by_index):  # type: ignore[no-untyped-def]
        from sftlab.evaluate.tasks.base import percent_metric

        extra = super().extra_metrics(rows, samples, by_index)
        first = next((r for r in rows if r["outcome"] != "missing"), {})
        for name in ("flexible", "separator_tolerant"):
            if f"{name}_correct" in first:
                extra[name], extra[f"{name}_stderr"] = percent_metric(
                    [1.0 if r.get(f"{name}_correct") else 0.0 for r in rows])
        return extra
