"""The task registry: one :class:`TaskSpec` per task, the single source of truth.

Everything that lists tasks is derived from :data:`TASKS`: the ``--task`` help of
``sftlab eval``, study validation (names, formats, judge settings), the report's
column order, categories and value scale, and which benchmarks smoke mode keeps.

A spec is declarative; the behaviour (data, prompt, scorer) lives in the module
named by ``impl`` (``"module:factory"`` under :mod:`sftlab.evaluate.tasks`), imported
only when the task is built, so reading the registry stays cheap.

``aggregation`` says how a task's value comes from its items, which decides what the
report can bootstrap over items:

- ``mean``: the mean of per-item scores (accuracy, pass@1, a rating);
- ``macro``: a mean of group means (MMLU in the opencompass format: the subject
  mean); per-item scores still exist and their mean is bootstrapped as an
  approximation;
- ``corpus``: a statistic of the whole set (Pearson, corpus BLEU): no per-item
  score sums to it, so the report shows no item bootstrap for it and says so;
- ``suite``: a task made of datasets (``llm-jp-eval``), each with its own
  aggregation.

``configs`` holds the named configurations per format: format -> config names (the
``opencompass`` format's are OpenCompass's dataset configs, defined with their shot
counts, kinds and defaults in :mod:`sftlab.evaluate.tasks.opencompass`); an empty
mapping means one unnamed configuration per (format, shots).

``version`` changes whenever a task's prompts or scoring change; it is part of every
evaluation id, so a bump re-runs exactly that task's evaluations.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import UserError

AGGREGATIONS = ("mean", "macro", "corpus", "suite")
BOOTSTRAPPABLE = frozenset({"mean", "macro"})


@dataclass(frozen=True)
class TaskSpec:
    """What a task is. ``scale`` is value units per unit of item score: 100 for
    percentages, 1 for ratings (MT-Bench's 1-10)."""

    name: str
    version: str
    impl: str  # "module:factory" under sftlab.evaluate.tasks
    formats: tuple[str, ...] = ("opencompass", "lm-eval")
    paper_shots: tuple[int, ...] = (0,)
    category: str | None = None  # the report's default category
    scale: float = 100.0
    aggregation: str = "mean"
    judge: bool = False  # needs a judge model (judge settings checked up front)
    smoke: bool = False  # the embedded data has this task's shape (smoke mode keeps it)
    configs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    # the item field whose text ``fewshot: retrieval`` compares (None: no retrieval)
    retrieval_field: str | None = None

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"task {self.name}: unknown aggregation {self.aggregation!r}")
        if not self.configs:
            from sftlab.evaluate.tasks.opencompass import FORMAT, configs_of

            names = configs_of(self.name)
            if names and FORMAT in self.formats:
                object.__setattr__(self, "configs", {FORMAT: names})

    @property
    def bootstrappable(self) -> bool:
        """Whether the mean of per-item scores is (close to) the task's value."""
        return self.aggregation in BOOTSTRAPPABLE

    def factory(self) -> Callable[[], Any]:
        module, _, attr = self.impl.partition(":")
        return getattr(importlib.import_module(f"sftlab.evaluate.tasks.{module}"), attr)


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) a task; the registration order is the report's column order."""
    TASKS[spec.name] = spec
    return spec


for _spec in (
    TaskSpec("math", "2", "math:MATH", category="Math", description="MATH, 5,000 test problems",
             retrieval_field="problem"),
    TaskSpec("gsm8k", "3", "gsm8k:GSM8K", paper_shots=(0, 4), category="Math", smoke=True,
             retrieval_field="question"),
    TaskSpec("mbpp", "2", "mbpp:MBPP", paper_shots=(3,), category="Coding", smoke=True),
    TaskSpec("humaneval", "2", "humaneval:HumanEval", category="Coding"),
    TaskSpec("hellaswag", "2", "hellaswag:HellaSwag", paper_shots=(0, 10), category="Knowledge",
             smoke=True),
    TaskSpec("nq_open", "2", "nq_open:NQOpen", paper_shots=(0, 1, 5, 25), category="Knowledge",
             smoke=True, retrieval_field="question"),
    TaskSpec("boolq", "2", "boolq:BoolQ", paper_shots=(0, 1, 5), category="Knowledge",
             smoke=True, retrieval_field="question"),
    TaskSpec("mmlu", "2", "mmlu:MMLU", paper_shots=(0, 5), category="Knowledge", smoke=True,
             aggregation="macro", retrieval_field="question"),
    TaskSpec("mt_bench", "1", "mt_bench:MTBench", category="Subjective", scale=1.0, judge=True),
    TaskSpec("ja_mt_bench", "1", "mt_bench:ja_mt_bench", category="Subjective", scale=1.0,
             judge=True, description="Japanese MT-Bench (FastChat jp-stable), judged in Japanese"),
    TaskSpec("alpaca_eval", "1", "alpaca_eval:AlpacaEval", category="Subjective", judge=True),
):
    register(_spec)


LLMJP_FORMAT = "llm-jp-eval"


def _register_llmjp() -> None:
    """llm-jp-eval v1.3's datasets (one task each, category = its code) and the suite."""
    from sftlab.evaluate.llmjp.datasets import DATASETS

    for ds in DATASETS.values():
        corpus = ds.metric in ("pearson", "spearman")
        register(TaskSpec(ds.name, "1", "llmjp:dataset_task", formats=(LLMJP_FORMAT,),
                          paper_shots=(4,), category=ds.category,
                          aggregation="corpus" if corpus else "mean",
                          description=f"llm-jp-eval {ds.name} ({', '.join(ds.metrics)})"))
    register(TaskSpec("llm-jp-eval", "1", "llmjp:SuiteTask", formats=(LLMJP_FORMAT,),
                      paper_shots=(4,), aggregation="suite",
                      description="every llm-jp-eval dataset found under --data; "
                                  "categories and AVR"))


_register_llmjp()


# ---------------------------------------------------------------- derived views


def task_names() -> list[str]:
    """Names of every registered task, sorted."""
    return sorted(TASKS)


def task_order() -> list[str]:
    """Names in registration order (the report's column order)."""
    return list(TASKS)


def formats() -> tuple[str, ...]:
    """Every format some task supports, in first-seen order."""
    return tuple(dict.fromkeys(f for spec in TASKS.values() for f in spec.formats))


def judge_tasks() -> frozenset[str]:
    return frozenset(n for n, s in TASKS.items() if s.judge)


def retrieval_tasks() -> frozenset[str]:
    """Tasks whose few-shot examples ``fewshot: retrieval`` can choose."""
    return frozenset(n for n, s in TASKS.items() if s.retrieval_field)


def smoke_tasks() -> frozenset[str]:
    return frozenset(n for n, s in TASKS.items() if s.smoke)


def rating_tasks() -> frozenset[str]:
    """Tasks whose value is not a percentage."""
    return frozenset(n for n, s in TASKS.items() if s.scale != 100.0)


def scale_of(name: str) -> float:
    """Value units per unit of item score (100 for tasks the registry does not know)."""
    spec = TASKS.get(name)
    return spec.scale if spec else 100.0


def default_categories() -> dict[str, list[str]]:
    """Report category -> its tasks, in registration order."""
    out: dict[str, list[str]] = {}
    for name, spec in TASKS.items():
        if spec.category:
            out.setdefault(spec.category, []).append(name)
    return out


def spec_of(name: str) -> TaskSpec:
    """The spec of ``name``; unknown names raise UserError with a suggestion."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown task {name!r}{hint}; known tasks: {', '.join(task_names())}")
    return TASKS[name]
