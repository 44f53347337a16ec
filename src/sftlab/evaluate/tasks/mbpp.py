"""MBPP: short Python functions checked by their ``assert`` tests.

Data: ``mbpp.jsonl`` (all 974 tasks; the test split is task_id 11-510) or a
test-split file; rows ``task_id, text, code, test_list, test_setup_code``
(the sanitized variant's ``prompt`` / ``test_imports`` are read too). The item
id is ``task_id``. Few-shot: tasks 2, 3, 4 (both harnesses; built in).

- ``opencompass`` (``mbpp_gen_830460``): dialogue rounds joined by ``\\n``:
  ``You are an expert Python programmer, and here is your task: {text} Your code
  should pass these tests:\\n\\n {tests joined by \\n}  \\n`` then ``[BEGIN]\\n``;
  the exemplars as written in the config (``[BEGIN]\\n '{code}' \\n[DONE] \\n\\n ``).
  As OpenCompass 0.5.4 runs it: no stop string (up to 512 new tokens), the code taken by
  ``MBPPEvaluator._process_answer``'s pattern cascade (``\\[BEGIN\\]\\s*'(.*)'\\s*\\[DONE\\]``
  first, so a generation that runs on into an invented next task yields that task's
  code), the program ``code`` then the tests with each ``assert a == b`` made type-aware
  (``make_assertions_type_aware``: ``1 == 1.0`` fails), without ``test_setup_code``.
- ``lm-eval`` (``mbpp.yaml``): ``...tests:\\n\\n{t0}\\n{t1}\\n{t2}\\n[BEGIN]\\n``,
  shots followed by ``{code}\\n[DONE]`` and joined by ``\\n\\n``; stop ``[DONE]``.

pass@1 by executing ``code + tests`` in the sandbox (unbiased pass@k with n samples).
"""

from __future__ import annotations

import re
from typing import Any

from sftlab.evaluate.datafiles import HubSource
from sftlab.evaluate.tasks.base import GenQuery, Item, TaskContext
from sftlab.evaluate.tasks.code_exec import run_and_judge
from sftlab.evaluate.tasks.generation import GenerationTask, SampleScore

TEST_IDS = range(11, 511)
FEWSHOT: tuple[dict[str, Any], ...] = (
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",  # noqa: E501
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"]},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n    return result",  # noqa: E501
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"]},
    {"task_id": 4, "text": "Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",  # noqa: E501
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",  # noqa: E501
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"]},  # noqa: E501
)
# The exemplar rounds exactly as OpenCompass's mbpp_gen_830460 writes them.
OC_ROUNDS: tuple[tuple[str, str], ...] = (
    ("You are an expert Python programmer, and here is your task: Write a function to find the similar elements from the given two tuple lists. Your code should pass these tests:\n\n assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\nassert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4) \nassert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14) \n",  # noqa: E501
     "[BEGIN]\n 'def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res)' \n[DONE] \n\n "),  # noqa: E501
    ("You are an expert Python programmer, and here is your task: Write a python function to identify non-prime numbers. Your code should pass these tests:\n\n assert is_not_prime(2) == False \nassert is_not_prime(10) == True \nassert is_not_prime(35) == True \n",  # noqa: E501
     "[BEGIN]\n 'import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n    return result' \n[DONE] \n\n "),  # noqa: E501
    ("You are an expert Python programmer, and here is your task: Write a function to find the largest integers from a given list of numbers using heap queue algorithm. Your code should pass these tests:\n\n assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \nassert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \nassert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35] \n",  # noqa: E501
     "[BEGIN]\n 'import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums' \n[DONE] \n\n "),  # noqa: E501
)


def text_of(doc: dict[str, Any]) -> str:
    return str(doc.get("text", doc.get("prompt", "")))


def tests_of(doc: dict[str, Any]) -> list[str]:
    return list(doc["test_list"])


def extract_code(text: str) -> str:
    """The program in a generation: inside a code fence or before ``[DONE]``, unquoted."""
    fence = re.search(r"```(?:python)?\s*\n(.*?)(?:```|$)", text, re.DOTALL)
    if fence:
        text = fence.group(1)
    text = re.split(r"\[DONE\]", text)[0]
    text = re.sub(r"^\s*\[BEGIN\]", "", text).strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        text = text[1:-1]
    elif text.startswith("'"):
        text = text[1:]
    return text.strip()


# OpenCompass's MBPPEvaluator._process_answer patterns, in its order.
OC_ANSWER_PATTERNS = (
    r"\[BEGIN\]\s*'(.*)'\s*\[DONE\]", r"BEGIN\s*'(.*)'\s*\[DONE\]", r"\[BEGIN\]\s*'(.*)'\s*DONE",
    r"BEGIN\s*'(.*)'\s*DONE", r"\[BEGIN\]\s*'(.*)\s*\[DONE\]", r"BEGIN\s*'(.*)\s*\[DONE\]",
    r"\[BEGIN\]\s*'(.*)\s*DONE", r"BEGIN\s*'(.*)\s*DONE", r"\[BEGIN\]\s*(.*)\s*\[DONE\]",
    r"BEGIN\s*(.*)\s*\[DONE\]", r"\[BEGIN\]\s*(.*)\s*DONE", r"BEGIN\s*(.*)\s*DONE",
    r"```python\s*(.*)\s*```", r"```\s*(.*)\s*```", r"```python\s*(.*)\s*$", r"```\s*(.*)\s*$",
    r"(.*)\s*```.*", r"\[BEGIN\]\s*'(.*)", r"\[BEGIN\](.*)", r"'(.*)'\s*\[DONE\]",
)
TYPE_AWARE_EQUAL = "__opencompass_type_aware_equal"
# The comparison OpenCompass 0.5.4 puts in place of ``==`` in the tests' asserts (same rules:
# types must match exactly, containers element-wise, a forged ``__eq__`` result rejected).
_TYPE_AWARE_SOURCE = f'''
def {TYPE_AWARE_EQUAL}(actual, expected):
    from collections.abc import Mapping
    eq = {TYPE_AWARE_EQUAL}
    if type(actual) is not type(expected):
        return False
    if isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(eq(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, (Mapping, set, frozenset)):
        if len(actual) != len(expected):
            return False
        pairs = list(actual.items()) if isinstance(actual, Mapping) else list(actual)
        wanted = list(expected.items()) if isinstance(expected, Mapping) else list(expected)
        used = set()
        for a in pairs:
            for i, e in enumerate(wanted):
                if i not in used and (eq(a[0], e[0]) and eq(a[1], e[1])
                                      if isinstance(actual, Mapping) else eq(a, e)):
                    used.add(i)
                    break
            else:
                return False
        return True
    try:
        result = actual == expected
    except Exception:
        return False
    return type(result) is bool and result
'''


def oc_extract(text: str) -> str:
    """OpenCompass 0.5.4's ``MBPPEvaluator._process_answer``."""
    for pattern in OC_ANSWER_PATTERNS:
        match = re.search(pattern, text, re.DOTALL)
        if match:
            text = match.group(1)
            break
    text = text.split("```")[0]
    text = re.split(r"'?\s*\[?DONE\]?", text)[0]
    return text.replace("\\_", "_").strip()


def type_aware_tests(tests: list[str]) -> str:
    """The tests with ``assert a == b`` replaced by the type-aware comparison (OpenCompass's
    ``make_assertions_type_aware``, via :mod:`ast`); unparsable tests are kept as they are."""
    import ast

    source = "\n".join(tests)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source

    class Harden(ast.NodeTransformer):
        def visit_Assert(self, node: ast.Assert) -> ast.Assert:
            self.generic_visit(node)
            test = node.test
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
                node.test = ast.Call(func=ast.Name(id=TYPE_AWARE_EQUAL, ctx=ast.Load()),
                                     args=[test.left, test.comparators[0]], keywords=[])
            return node

    tree = Harden().visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def oc_program_of(doc: dict[str, Any], code: str) -> str:
    """The program OpenCompass runs: the code, then the type-aware tests (no setup code)."""
    return f"{code}\n{_TYPE_AWARE_SOURCE}\n{type_aware_tests(tests_of(doc))}\n"


def program_of(doc: dict[str, Any], code: str) -> str:
    setup = "\n".join(filter(None, [str(doc.get("test_setup_code") or ""),
                                    "\n".join(doc.get("test_imports") or [])]))
    return "\n".join(filter(None, [setup, code, "\n".join(tests_of(doc))])) + "\n"


class MBPP(GenerationTask):
    eval_split = "test"
    fewshot_split = None
    aliases = ("mbpp",)
    hub = HubSource("google-research-datasets/mbpp", "full", (("test", "test"),))
    headline = "pass@1"
    max_new_tokens = 512

    def allowed_shots(self, fmt: str) -> tuple[int, ...]:
        return (0, 1, 2, 3)

    def required_fields(self) -> tuple[str, ...]:
        return ("task_id", "test_list")

    def make_items(self, rows: list[dict[str, Any]], split: str) -> list[Item]:
        return [Item(str(r["task_id"]), r) for r in rows]

    def select_eval(self, items: list[Item]) -> list[Item]:
        return [it for it in items if int(it.id) in TEST_IDS]

    def shots_for(self, item: Item, loaded: Any, ctx: TaskContext) -> list[Item]:
        return [Item(str(d["task_id"]), d) for d in FEWSHOT[: ctx.shots]]

    def notes(self, loaded: Any, ctx: TaskContext) -> dict[str, Any]:
        notes = {"data": loaded.eval_path}
        if ctx.shots:
            notes["fewshot_source"] = f"built-in MBPP tasks {', '.join(str(d['task_id']) for d in FEWSHOT[: ctx.shots])}"
        return notes

    def query(self, item: Item, shots: list[Item], fmt: str) -> GenQuery:
        doc = item.doc
        if fmt == "opencompass":
            from sftlab.evaluate.tasks.opencompass import Round, gen_query

            tests = "\n".join(tests_of(doc))
            final = Round(f"You are an expert Python programmer, and here is your task: "
                          f"{text_of(doc)} Your code should pass these tests:\n\n {tests}  \n",
                          "[BEGIN]\n")
            return gen_query([*(Round(h, b) for h, b in OC_ROUNDS[: len(shots)]), final], (), 512)

        def head(d: dict[str, Any]) -> str:
            t = tests_of(d)
            return (f"You are an expert Python programmer, and here is your task: {text_of(d)} "
                    f"Your code should pass these tests:\n\n{t[0]}\n{t[1]}\n{t[2]}\n[BEGIN]\n")

        parts = [head(s.doc) + f"{s.doc['code']}\n[DONE]" for s in shots]
        return GenQuery("\n\n".join(parts + [head(doc)]), ("[DONE]",), 512)

    def score(self, items: list[Item], samples: list[list[str]],
              ctx: TaskContext) -> list[list[SampleScore]]:
        oc = ctx.format == "opencompass"
        codes = [[(oc_extract if oc else extract_code)(t) for t in texts] for texts in samples]
        build = oc_program_of if oc else program_of
        programs = [[build(it.doc, c) for c in cs] for it, cs in zip(items, codes, strict=True)]
        return run_and_judge(programs, codes, ctx)
