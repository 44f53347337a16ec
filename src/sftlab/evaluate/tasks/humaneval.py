"""HumanEval: complete a Python function from its signature and docstring.

Data: ``humaneval.jsonl`` (164 rows: ``task_id, prompt, entry_point,
canonical_solution, test``); the item id is ``task_id``. 0-shot only.

- ``opencompass`` (``humaneval_openai_sample_evals_gen_dcae0e``): ``Read the
  following function signature and docstring, and fully implement the function
  described. Your response should only contain the code for this
  function.\\n{prompt}``; the completion is OpenCompass 0.5.4's
  ``humaneval_postprocess_v2``: the first fenced code block of the output (or the whole
  output), ``lstrip()``-ed (so an unfenced, indented body becomes a top-level
  ``return`` and fails, as in OpenCompass); 3 s per program (its ``timeout=3.0``).
- ``lm-eval`` (``humaneval.yaml``): the raw prompt; stops ``\\nclass``, ``\\ndef``,
  ``\\n#``, ``\\nif``, ``\\nprint``; the output is the completion.

The program run in the sandbox is ``prompt + completion + test + check(entry_point)``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.tasks.base import GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.code_exec import run_and_judge
from sftlab.evaluate.tasks.generation import GenerationTask, SampleScore

OC_INSTRUCTION = ("Read the following function signature and docstring, and fully implement "
                  "the function described. Your response should only contain the code for "
                  "this function.\n")
LM_EVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def oc_completion(text: str) -> str:
    """OpenCompass 0.5.4 ``humaneval_postprocess_v2``: the first fenced block, else the text,
    left-stripped."""
    blocks = re.findall(r"```\w*\n(.*?)```", text, re.DOTALL)
    return (blocks[0] if blocks else text).lstrip()


def program_of(doc: dict[str, Any], completion: str) -> str:
    return (f"{doc['prompt']}{completion}\n\n{doc['test']}\n\n"
            f"check({doc['entry_point']})\n")


class HumanEval(GenerationTask):
    eval_split = "test"
    fewshot_split = None
    aliases = ("humaneval",)
    hub = HubSource("openai/openai_humaneval", None, (("test", "test"),))
    headline = "pass@1"
    max_new_tokens = 1024

    def allowed_shots(self, fmt: str) -> tuple[int, ...]:
        return (0,)

    def required_fields(self) -> tuple[str, ...]:
        return ("task_id", "prompt", "test", "entry_point")

    def make_items(self, rows: list[dict[str, Any]], split: str) -> list[Item]:
        return [Item(str(r["task_id"]), r) for r in rows]

    def query(self, item: Item, shots: list[Item], fmt: str) -> GenQuery:
        if fmt == "opencompass":
            from sftlab.evaluate.tasks.opencompass import Round, gen_query

            return gen_query([Round(OC_INSTRUCTION + item.doc["prompt"])], (), 512)
        return GenQuery(item.doc["prompt"], LM_EVAL_STOPS, 1024)

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        post = oc_completion if ctx.format == "opencompass" else (lambda t: t)
        if ctx.format == "opencompass":
            ctx = replace(ctx, options={"code_timeout": 3.0, **ctx.options})
        codes = [[post(t) for t in texts] for texts in samples]
        programs = [[program_of(it.doc, c) for c in cs] for it, cs in zip(items, codes, strict=True)]
        return run_and_judge(programs, codes, ctx)
