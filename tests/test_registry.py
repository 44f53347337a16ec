"""The task registry is the one list of tasks: everything else is derived from it."""

from __future__ import annotations

import pytest

from sftlab.errors import UserError
from sftlab.evaluate.tasks import registry
from sftlab.evaluate.tasks.base import get_task
from sftlab.evaluate.tasks.registry import TASKS, TaskSpec


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_builds_with_its_spec(name):
    task = get_task(name)
    assert task.spec is TASKS[name]
    assert (task.name, task.version, task.paper_shots) == (name, TASKS[name].version,
                                                           TASKS[name].paper_shots)


def test_derived_lists_follow_the_registry(monkeypatch):
    from sftlab.commands.eval import _task_help

    monkeypatch.setitem(TASKS, "toy", TaskSpec("toy", "1", "gsm8k:GSM8K", category="Toys",
                                               judge=True, smoke=True, scale=1.0))
    assert registry.default_categories()["Toys"] == ["toy"]
    assert "toy" in registry.judge_tasks() and "toy" in registry.smoke_tasks()
    assert "toy" in registry.rating_tasks() and registry.task_order()[-1] == "toy"
    assert "toy" in _task_help()


def test_study_rejects_unknown_task_and_format_with_key_paths():
    from sftlab.study.spec import study_from_dict

    raw = {"name": "s", "models": [{"name": "m", "path": "tiny:llama"}],
           "datasets": [{"name": "d", "format": "alpaca", "path": "x.json"}],
           "grid": {"sizes": [8], "methods": ["full"], "settings": ["single"]},
           "methods": {"full": {"learning_rate": 1e-5, "batch_size": 8, "epochs": 1}},
           "evaluation": {"benchmarks": [{"task": "gsm9k"}, {"task": "mmlu", "format": "helm"}]}}
    with pytest.raises(UserError) as err:
        study_from_dict(raw)
    text = "\n".join(err.value.problems)
    assert "evaluation.benchmarks[0].task: unknown task 'gsm9k' (did you mean 'gsm8k'?)" in text
    assert "evaluation.benchmarks[1].format: unknown value 'helm'" in text


def test_no_hard_coded_task_lists_remain():
    """The modules that used to list tasks now read the registry."""
    from pathlib import Path

    import sftlab

    root = Path(sftlab.__file__).parent
    for rel in ("study/spec.py", "report/options.py", "report/view.py", "smoke.py",
                "commands/eval.py"):
        text = (root / rel).read_text(encoding="utf-8")
        assert '"hellaswag", "nq_open"' not in text and '"mt_bench", "alpaca_eval"' not in text, rel


def test_study_benchmark_format_defaults_to_the_tasks_first():
    from sftlab.study.spec import BenchmarkSpec

    assert BenchmarkSpec(task="llm-jp-eval", shots=[4]).format == "llm-jp-eval"
    assert BenchmarkSpec(task="gsm8k").format == "opencompass"
    assert BenchmarkSpec(task="mmlu", format="lm-eval").format == "lm-eval"
