"""sftlab.evaluate: benchmark tasks, backends (hf, vllm, openai, replay), metrics, sandbox.

Entry points: :func:`sftlab.evaluate.runner.evaluate_model` (one model, many tasks)
and :func:`sftlab.evaluate.runner.score_predictions` (replay). Tasks live in
:mod:`sftlab.evaluate.tasks` (registry: ``get_task``, ``task_names``).

The entry points load on first use, so importing a light submodule (``sampling``'s
metric names, read by the store on every command) does not load the runner.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvalResult", "TaskRequest", "evaluate_model", "score_predictions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sftlab.evaluate import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
