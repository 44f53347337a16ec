"""``sftlab score``: score outputs produced elsewhere (replay) on a benchmark task."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sftlab.commands.eval import CONFIG_HELP
from sftlab.errors import UserError


def register(app: typer.Typer) -> None:
    """Add the ``score`` command to ``app``."""

    @app.command("score")
    def score_cmd(
        task: str = typer.Option(..., "--task", help="TASK[:SHOTS] (one shot count; default: the paper's first)."),
        data: str = typer.Option(..., "--data", help="The benchmark's data: a file of items or a folder of split files."),
        predictions: Path = typer.Option(..., "--predictions", help="JSONL with 'id' and 'output' per row (several rows per id = samples); a predictions file sftlab wrote is read as it is."),
        fmt: str | None = typer.Option(None, "--format", help="Scoring format: opencompass, lm-eval or llm-jp-eval (default: the task's first)."),
        limit: int | None = typer.Option(None, "--limit", help="Score only the first N items."),
        config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
        out: Path | None = typer.Option(None, "--out", help="Also write per-item predictions + provenance here."),
        judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="Judge server URL, OpenAI-compatible (mt_bench, alpaca_eval)."),
        judge_model: str | None = typer.Option(None, "--judge-model", help="Judge model name on that server."),
        judge_api_key_env: str | None = typer.Option(None, "--judge-api-key-env", help="Name of the env variable holding the judge's API key (the key is never written)."),
        judge_max_tokens: int | None = typer.Option(None, "--judge-max-tokens", help="Cap on each judgment's tokens (default 2048)."),
        judge_prompts: Path | None = typer.Option(None, "--judge-prompts", help="Judge prompts file in FastChat's judge_prompts.jsonl shape (default: sftlab's own)."),
        samples: int | None = typer.Option(None, "--samples", min=1, help="Rows per id in "
                                           "--predictions (default: the file's most common count; "
                                           "every id must have exactly that many, its samples)."),
        ks: str | None = typer.Option(None, "--k", help="k values for pass@K (math, gsm8k: cons@K, maj@K too) over several outputs per id, e.g. 1,4,16 (default: 1, 2, 4 ... up to the fewest outputs of an id)."),
        as_json: bool = typer.Option(False, "--json", help="Print {\"results\": [...]} as JSON."),
    ) -> None:
        """Score generated outputs against a benchmark (ids: the benchmark's own, else row index;
        mt_bench: <question_id>/turn1 and /turn2; alpaca_eval: the row index)."""
        from sftlab.commands.eval import (
            judge_options,
            parse_task_spec,
            print_results,
            sampling_options,
        )
        from sftlab.evaluate.runner import TaskRequest, score_predictions
        from sftlab.evaluate.tasks.base import get_task

        name, shots = parse_task_spec(task)
        if shots is not None and len(shots) != 1:
            raise UserError(f"--task {task!r}: score takes one shot count")
        spec = get_task(name)
        k = shots[0] if shots else spec.paper_shots[0]
        fmt = fmt or spec.formats[0]
        if out is not None and out.exists() and not out.is_dir():
            raise UserError("--out must be a folder (predictions and provenance go in it); "
                            "this is an existing file", where=str(out))
        if not predictions.is_file():
            raise UserError("no such predictions file", where=str(predictions))
        options = judge_options(judge_base_url, judge_model, judge_api_key_env, judge_max_tokens,
                                judge_prompts, out) | sampling_options(ks=ks)
        result = score_predictions(TaskRequest(name, k, fmt, data, limit, options, config), predictions,
                                   out_dir=out, samples=samples)
        missing = (result.provenance.get("notes") or {}).get("missing_ids") or []
        if missing:
            print(f"missing: {len(missing)} of {result.n} items have no prediction (scored as "
                  f"missing, i.e. wrong): {', '.join(map(str, missing[:10]))}"
                  f"{' ...' if len(missing) > 10 else ''}", file=sys.stderr)
        print_results([result], as_json)
