"""`sftlab synth SPEC --out DIR`: generate and filter a synthetic data set; print its funnel."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_command(
        spec_path: Path = typer.Argument(..., metavar="SPEC", help="Synth spec YAML file."),
        out: Path = typer.Option(..., "--out", help="Output folder: data.jsonl, yield.csv, "
                                                    "summary.json and the request cache."),
        as_json: bool = typer.Option(False, "--json",
                                     help="Print the funnel totals as one JSON object."),
    ) -> None:
        """Generate problems from a grid of conditions with a model behind an
        OpenAI-compatible API, filter them (judge, re-solve, dedupe, decontaminate) and
        write the kept rows with their provenance and the funnel per condition.

        Every request is cached in DIR/cache.sqlite: running again (after a crash or
        kill) asks only what was never answered. Exits 1 when requests still failed
        after their retries (the output is then incomplete; run again)."""
        import sys

        from sftlab.synth.pipeline import run_synth
        from sftlab.synth.spec import load_spec

        spec = load_spec(spec_path)

        verbs = {"generated": "generating", "judged": "judging", "resolved": "re-solving",
                 "unique": "deduplicating", "clean": "decontaminating"}

        def on_stage(stage: str, rows: int) -> None:
            if not as_json:
                print(f"synth: {verbs.get(stage, stage)} {rows} row(s)", file=sys.stderr)

        result = run_synth(spec, out, base_dir=spec_path.parent, on_stage=on_stage)
        if as_json:
            print(json.dumps(result.to_json(), indent=1))
        else:
            _print_funnel(result)
        if not result.complete:
            print(f"synth: {result.failed_requests} request(s) failed after retries "
                  f"({'; '.join(result.errors[:3])}); the output is incomplete: run again "
                  "(answers so far are cached)", file=sys.stderr)
            raise SystemExit(1)  # (cli.main drops a typer.Exit code under standalone_mode=False)


def _print_funnel(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from sftlab.synth.spec import STAGES

    names = list(result.conditions[0]) if result.conditions else []
    table = Table(title=f"synthetic data: {result.totals['kept']} row(s) kept")
    for col in (*names, *STAGES):
        table.add_column(col, justify="left" if col in names else "right")
    for condition, counts in zip(result.conditions, result.funnel, strict=True):
        table.add_row(*(str(condition[n]) for n in names), *(str(counts[s]) for s in STAGES))
    totals = result.totals
    table.add_row(*(["total"] + [""] * (len(names) - 1)), *(str(totals[s]) for s in STAGES))
    console = Console(width=160)
    console.print(table)
    r = result.requests
    console.print(f"requests: {r['requests']} sent ({r['retries']} retries), "
                  f"{r['cache_hits']} answered from the cache, {r['failures']} failed")
    console.print(f"data: {result.out / 'data.jsonl'}  funnel: {result.out / 'yield.csv'}")
