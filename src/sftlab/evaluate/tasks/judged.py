"""What the judge-scored tasks (MT-Bench, AlpacaEval 2) share: zero-shot only, and the
judge settings checked before any model is loaded."""

from __future__ import annotations

from sftlab.evaluate.judge import check_judge_options
from sftlab.evaluate.tasks.base import Task, TaskContext


class JudgedTask(Task):

    def allowed_shots(self, fmt: str) -> tuple[int, ...] | None:
        return (0,)

    def check(self, ctx: TaskContext) -> None:
        """Shots, format and limit, plus the judge settings (before any model is loaded)."""
        super().check(ctx)
        check_judge_options(ctx.options)
