"""``sftlab prompts``: exactly what a backend would receive for a task, per item.

The prompts come from the evaluation's own code path (``runner.prepare`` -> the task's
``preflight`` / ``build``), not a copy, so they are byte for byte what ``sftlab eval``
sends: a likelihood task's context and choices, a generation task's prompt, stop strings
and new-token cap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from sftlab import jsonio
from sftlab.commands.eval import CONFIG_HELP, TEMPLATE_MODE_HELP
from sftlab.errors import UserError


def prompt_rows(task: Any, ctx: Any) -> list[dict[str, Any]]:
    """One row per item: ``id``, ``prompt`` and ``choices`` (likelihood) or ``stop`` and
    ``max_new_tokens`` (generation)."""
    from sftlab.evaluate.tasks.base import ChoiceQuery

    build = getattr(task, "build", None)
    if build is None:
        raise UserError(f"task {task.name} builds its prompts while it runs (judge-scored "
                        "tasks); sftlab prompts covers the benchmark tasks")
    loaded, queries = build(ctx)
    rows = []
    for item, q in zip(loaded.items, queries, strict=True):
        row: dict[str, Any] = {"id": str(item.id)}
        if isinstance(q, ChoiceQuery):
            row |= {"prompt": q.context, "choices": list(q.choices)}
        else:
            row |= {"prompt": q.prompt, "stop": list(q.stop),
                    "max_new_tokens": int(ctx.options.get("max_new_tokens", q.max_new_tokens))}
        rows.append(row)
    return rows


def _from_study(path: Path, name: str, shots: int | None) -> tuple[dict[str, Any], str | None]:
    """The study's settings for this task (its benchmark entry, if any) and its template."""
    from sftlab.study import load_study

    study = load_study(path)
    ev = study.evaluation
    template = study.template if ev.use_template else None
    mode = ev.template_mode
    for bench in ev.benchmarks:
        if bench.task == name and (shots is None or shots in bench.shots):
            return ({"format": bench.format, "config": bench.config,
                     "data": study.resolve_path(bench.data) if bench.data else None,
                     "limit": bench.limit, "max_new_tokens": bench.max_new_tokens,
                     "shots": shots if shots is not None else bench.shots[0],
                     "template_mode": mode}, template)
    return {"template_mode": mode}, template


def register(app: typer.Typer) -> None:
    """Add the ``prompts`` command to ``app``."""

    @app.command("prompts")
    def prompts_cmd(
        task: str = typer.Option(..., "--task", help="TASK:SHOTS (one shot count; default: the paper's first)."),
        fmt: str | None = typer.Option(None, "--format", help="opencompass, lm-eval or llm-jp-eval (default: the study's, else the task's first)."),
        config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
        data: str | None = typer.Option(None, "--data", help="Local data: a file of items or a folder of split files (default: the study's, else the hub)."),
        limit: int | None = typer.Option(None, "--limit", help="Only the first N items."),
        study: Path | None = typer.Option(None, "--study", help="A study YAML: its template (when use_template) and its benchmark settings for this task."),
        template: str | None = typer.Option(None, "--template", help="Study template with {instruction} and {response} (overrides --study's)."),
        template_mode: str | None = typer.Option(None, "--template-mode", help=TEMPLATE_MODE_HELP),
        out: Path | None = typer.Option(None, "--out", help="Write the rows as JSONL to this file."),
        as_json: bool = typer.Option(False, "--json", help="Print {\"prompts\": [...]} as JSON."),
    ) -> None:
        """Print exactly what a backend would receive for each item of a task."""
        from sftlab.commands.eval import parse_task_spec
        from sftlab.evaluate.runner import TaskRequest, prepare, template_mode_of
        from sftlab.evaluate.tasks.base import get_task

        name, shots = parse_task_spec(task)
        if shots is not None and len(shots) != 1:
            raise UserError(f"--task {task!r}: prompts takes one shot count")
        settings: dict[str, Any] = {}
        if study is not None:
            if not study.is_file():
                raise UserError("no such study file", where=str(study))
            settings, study_template = _from_study(study, name, shots[0] if shots else None)
            template = template if template is not None else study_template
        spec = get_task(name)
        k = shots[0] if shots else settings.get("shots", spec.paper_shots[0])
        options = {}
        if settings.get("max_new_tokens"):
            options["max_new_tokens"] = settings["max_new_tokens"]
        request = TaskRequest(name, k, fmt or settings.get("format") or spec.formats[0],
                              data or settings.get("data"),
                              limit if limit is not None else settings.get("limit"), options,
                              config or settings.get("config"))
        mode = template_mode or settings.get("template_mode") or "instruction"
        [(the_task, ctx)] = prepare([request], template, seed=1234, template_mode=mode)
        rows = prompt_rows(the_task, ctx)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(jsonio.line(r) for r in rows),
                           encoding="utf-8")
        if as_json:
            print(json.dumps({"task": name, "shots": k, "format": ctx.format,
                              "config": ctx.config,
                              "template_mode": template_mode_of(ctx), "prompts": rows},
                             ensure_ascii=False))
        elif out is None:
            for row in rows:
                sys.stdout.write(f"=== {row['id']}\n{row['prompt']}\n")
                if "choices" in row:
                    sys.stdout.write(f"--- choices: {json.dumps(row['choices'])}\n")
                else:
                    sys.stdout.write(f"--- stop: {json.dumps(row['stop'])}, "
                                     f"max_new_tokens: {row['max_new_tokens']}\n")
        else:
            print(f"{len(rows)} prompts written to {out}")
