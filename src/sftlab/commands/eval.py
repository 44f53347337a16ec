"""``sftlab eval``: evaluate one model (loaded once) on benchmark tasks."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import typer

from sftlab import jsonio
from sftlab.errors import UserError


def parse_task_spec(spec: str) -> tuple[str, list[int] | None]:
    """``gsm8k:0,4`` -> ("gsm8k", [0, 4]); ``gsm8k`` -> ("gsm8k", None)."""
    name, _, shots = spec.partition(":")
    if not name:
        raise UserError(f"--task {spec!r}: missing task name (write TASK[:SHOTS], e.g. gsm8k:0,4)")
    if not shots:
        return name, None
    try:
        values = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError as err:
        raise UserError(f"--task {spec!r}: shots must be integers like gsm8k:0,4") from err
    if not values or any(v < 0 for v in values):
        raise UserError(f"--task {spec!r}: shots must be integers >= 0")
    return name, values


def expand_tasks(specs: list[str], fmt: str | None, data: str | None, limit: int | None,
                 options: dict, config: str | None = None) -> list:
    """TaskRequests for every TASK[:SHOTS] (no shots: the paper's shot counts; no format:
    each task's first, e.g. opencompass, or llm-jp-eval for its datasets)."""
    from sftlab.evaluate.runner import TaskRequest
    from sftlab.evaluate.tasks.base import get_task

    requests, problems = [], []
    for spec in specs:
        try:
            name, shots = parse_task_spec(spec)
            task = get_task(name)
            shots = shots if shots is not None else list(task.paper_shots)
        except UserError as err:
            problems += err.problems
            continue
        requests += [TaskRequest(name, k, fmt or task.formats[0], data, limit, dict(options),
                                 config) for k in shots]
    if problems:
        raise UserError(problems)
    return requests


def backend_options(backend: str, base_url: str | None, api_key_env: str | None,
                    max_batch_tokens: int | None) -> dict:
    if backend == "openai":
        opts: dict = {"base_url": base_url}
        if api_key_env:
            if api_key_env not in os.environ:
                raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
            opts["api_key"] = os.environ[api_key_env]
        return opts
    return {"max_batch_tokens": max_batch_tokens} if max_batch_tokens and backend == "hf" else {}


def sampling_options(samples: int = 1, temperature: float | None = None,
                     top_p: float | None = None, seed: int | None = None,
                     ks: str | None = None) -> dict:
    """Task options from the sampling flags (validated; see :mod:`sftlab.evaluate.sampling`)."""
    from sftlab.evaluate.sampling import Sampling, parse_ks

    try:
        sampling = Sampling(samples, temperature, top_p, seed,
                            parse_ks(ks) if ks is not None else None)
    except UserError as err:
        raise UserError([f"--{p}".replace("--top_p", "--top-p") for p in err.problems]) from err
    return sampling.to_options()


def json_option(flag: str, text: str, model: type) -> dict:
    """A flag's JSON value validated by a pydantic model."""
    from pydantic import ValidationError

    try:
        return model.model_validate_json(text).model_dump()
    except ValidationError as err:
        raise UserError([f"{flag}: {'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                         for e in err.errors()]) from err


def retrieval_options(fewshot: str | None, embedder: str | None, pool: str | None,
                      batch_size: int | None) -> dict:
    """Task options from ``--fewshot retrieval`` and the ``--retrieval-*`` flags
    (:mod:`sftlab.evaluate.retrieval`); the embedder and pool are checked when the task
    loads its data, before the model."""
    from pydantic import ValidationError

    from sftlab.evaluate.retrieval import Retrieval

    if fewshot is None:
        given = [flag for flag, v in (("--retrieval-embedder", embedder),
                                      ("--retrieval-pool", pool),
                                      ("--retrieval-batch-size", batch_size)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)}: only with --fewshot retrieval")
        return {}
    if fewshot != "retrieval":
        raise UserError(f"--fewshot {fewshot!r}: the only choice is retrieval (without the flag "
                        "each task chooses its own examples)")
    if embedder is None:
        raise UserError("--fewshot retrieval needs --retrieval-embedder (a sentence-transformers "
                        "folder, pkg:<package>/<folder> or all-minilm-l6-v2)")
    raw: dict = {"embedder": embedder, "pool": {"path": pool} if pool else None}
    if batch_size is not None:
        raw["batch_size"] = batch_size
    try:
        return {"retrieval": Retrieval.model_validate(raw).model_dump()}
    except ValidationError as err:
        flags = {"embedder": "--retrieval-embedder", "pool": "--retrieval-pool",
                 "batch_size": "--retrieval-batch-size"}
        raise UserError([f"{flags.get(str(e['loc'][0]), '--fewshot')}: {e['msg']}"
                         for e in err.errors()]) from err


def judge_options(base_url: str | None, model: str | None, api_key_env: str | None,
                  max_tokens: int | None, prompts: Path | None,
                  cache_dir: Path | None) -> dict:
    """Task options for judge-scored tasks from the ``--judge-*`` flags (the key's
    variable *name* only; judgments cached in ``cache_dir/judgments.sqlite``)."""
    options: dict = {}
    if base_url or model:
        options["judge"] = {"base_url": base_url or "http://127.0.0.1:8000/v1",
                            "model": model or "judge", "api_key_env": api_key_env}
        if max_tokens is not None:
            if max_tokens < 1:
                raise UserError(f"--judge-max-tokens must be >= 1, got {max_tokens}")
            options["judge"]["max_tokens"] = max_tokens
        if cache_dir is not None:
            options["judge_cache"] = str(Path(cache_dir) / "judgments.sqlite")
    if prompts is not None:
        if not Path(prompts).is_file():
            raise UserError("no such judge prompts file", where=str(prompts))
        options["judge_prompts"] = str(prompts)
    return options


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def secondary_metrics(extra: dict) -> str:
    """``extra`` as ``name=value`` pairs (``x ± se`` where a ``x_stderr`` exists); nested
    tables (MMLU's per-subject means) are left to the provenance file."""
    parts = []
    for key, value in extra.items():
        if key.endswith("_stderr") or isinstance(value, (dict, list)):
            continue
        se = extra.get(f"{key}_stderr")
        parts.append(f"{key}={_fmt(value)}" + (f" ± {_fmt(se)}" if se is not None else ""))
    return ", ".join(parts)


def print_results(results: list, as_json: bool) -> None:
    """The results as ``{"results": [...]}`` (``--json``) or as a table with notes; then
    exit 1 when any of them failed (no item scored, or a score that is not a number)."""
    if as_json:
        print(jsonio.dumps({"results": [row for r in results for row in r.summaries()]}))
    else:
        _print_table(results)
    failures = [r.failure() for r in results if r.failure()]
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    if failures:
        raise typer.Exit(1)


def _print_table(results: list) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a file or a pipe: no reason to squeeze into 80 columns
        console = Console(width=160)
    sep = " " if console.width >= 110 else "\n"  # narrow terminal: one outcome per line
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("task", "shots", "format", "config", "metric", "value", "stderr", "n"):
        table.add_column(name, no_wrap=True,
                         justify="right" if name in ("shots", "value", "stderr", "n") else "left")
    table.add_column("outcomes", overflow="fold")
    for r in results:
        outcomes = sep.join(f"{k}={v}" for k, v in r.outcomes.items())
        table.add_row(r.task, str(r.shots), r.format, r.config or "-", r.metric, _fmt(float(r.value)),
                      _fmt(float(r.stderr)), str(r.n), outcomes)
    console.print(table)
    for r in results:
        label = f"{r.task} {r.shots}-shot ({r.format})"
        if r.extra and secondary_metrics(r.extra) and "categories" not in r.extra:
            print(f"{label}: {secondary_metrics(r.extra)}")
        if "categories" in r.extra:  # a suite (llm-jp-eval): its categories and v1.3's average
            print(f"{label}: " + ", ".join(f"{c}={_fmt(v) if v is not None else 'missing'}"
                                           for c, v in r.extra["categories"].items())
                  + f"; v1.3 AVG (empty category counted as 0) = {_fmt(r.extra['AVR_v1.3'])}")
            print(f"{label}: datasets " + ", ".join(
                f"{n} {d['metric']}={_fmt(d['value'])}" for n, d in r.extra["datasets"].items()))
        source = ((r.provenance or {}).get("notes") or {}).get("fewshot_source", "")
        if "evaluation split" in source:
            print(f"{label}: few-shot examples from the {source}")
    for r in results:
        if r.predictions_path:
            print(f"predictions: {r.predictions_path}")


class _StderrHandler(logging.Handler):
    """Writes each record to the *current* ``sys.stderr`` (which tests may swap)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _show_progress() -> None:
    """Progress lines of the evaluation runner on stderr (the library logs them at INFO)."""
    logger = logging.getLogger("sftlab.evaluate.runner")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _task_help() -> str:
    from sftlab.evaluate.tasks.registry import TASKS

    judged = [n for n, s in TASKS.items() if s.judge]
    return ("TASK[:SHOTS], e.g. gsm8k:0,4 (repeatable; no shots = the paper's). Tasks: "
            f"{', '.join(TASKS)} ({', '.join(judged)} need --judge-*).")


TASK_HELP = _task_help()
TEMPLATE_MODE_HELP = ("With --template: instruction (the whole prompt is the {instruction}) or "
                      "rounds (opencompass format: each round wrapped as HUMAN / BOT, "
                      "OpenCompass's meta template; generation starts after the BOT cue).")
CONFIG_HELP = ("opencompass format: the OpenCompass config to reproduce, by name (e.g. "
               "hellaswag_ppl_47bff9), or gen / ppl (the first such config for the shot count); "
               "default: the reference study's config per (task, shots), see the README.")


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to ``app``."""

    @app.command("eval")
    def eval_cmd(
        model: str = typer.Option(..., "--model", help="Model folder or hub id (or a PEFT adapter folder)."),
        adapter: str | None = typer.Option(None, "--adapter", help="PEFT adapter folder on top of --model."),
        task: list[str] = typer.Option(..., "--task", help=TASK_HELP),
        fmt: str | None = typer.Option(None, "--format", help="Prompt/scoring format: opencompass, lm-eval or llm-jp-eval (default: the task's first: opencompass, llm-jp-eval for its datasets)."),
        config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
        data: str | None = typer.Option(None, "--data", help="Local data: a file of items or a folder of split files (default: the hub)."),
        limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N items."),
        backend: str = typer.Option("hf", "--backend", help="hf, vllm or openai."),
        out: Path | None = typer.Option(None, "--out", help="Folder for predictions (default: sftlab-eval/<model name>)."),
        template: str | None = typer.Option(None, "--template", help="Study template with {instruction} and {response}: the task prompt becomes the instruction."),
        template_mode: str = typer.Option("instruction", "--template-mode", help=TEMPLATE_MODE_HELP),
        seed: int = typer.Option(1234, "--seed", help="Seed for sampling."),
        samples: int = typer.Option(1, "--samples", "--n", help="Samples per item for generation tasks (pass@K; math, gsm8k: cons@K, maj@K too)."),
        temperature: float | None = typer.Option(None, "--temperature", help="Sampling temperature (default: 0.8 with --samples > 1, else greedy)."),
        top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling (default: 0.95 with --samples > 1)."),
        ks: str | None = typer.Option(None, "--k", help="k values to report, e.g. 1,4,16 (default: 1, 2, 4 ... up to --samples)."),
        self_aggregation: str | None = typer.Option(None, "--self-aggregation", help="Recursive self-aggregation as JSON: '{\"population\": 16, \"subset\": 4, \"loops\": 10}'; pass@K / cons@K per loop."),
        tool_use: str | None = typer.Option(None, "--tool-use", help="Run the Python blocks the model writes (then ```output) in the sandbox, as JSON: '{\"max_calls\": 4, \"time_budget\": 60, \"timeout\": 10}' ('{}' = these defaults)."),
        budget_forcing: str | None = typer.Option(None, "--budget-forcing", help="s1 budget forcing as JSON, e.g. '{\"end\": \"</think>\", \"max_thinking\": 512, \"min_thinking\": 128, \"max_waits\": 2}' (keys: end, max_thinking, min_thinking, wait, max_waits, answer_prefix, answer_tokens)."),
        fewshot: str | None = typer.Option(None, "--fewshot", help="Few-shot selection: retrieval (the k pool items most similar to each item by embedding; default: each task's own, first k or fixed)."),
        retrieval_embedder: str | None = typer.Option(None, "--retrieval-embedder", help="--fewshot retrieval: sentence-transformers folder, pkg:<package>/<folder>, or all-minilm-l6-v2."),
        retrieval_pool: str | None = typer.Option(None, "--retrieval-pool", help="--fewshot retrieval: a data file in the task's shape to retrieve from (default: the task's few-shot split, else its evaluation split without the item)."),
        retrieval_batch_size: int | None = typer.Option(None, "--retrieval-batch-size", help="--fewshot retrieval: texts per embedding batch (default 64)."),
        max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Cap on generated tokens per answer (default: each task's own)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Rows per forward pass (hf)."),
        max_batch_tokens: int | None = typer.Option(None, "--max-batch-tokens", help="Token budget per batch (hf)."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: auto)."),
        dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16, float16 (default: fp32 on CPU, bf16 on GPU)."),
        base_url: str | None = typer.Option(None, "--base-url", help="openai backend: server URL (default $OPENAI_BASE_URL)."),
        api_key_env: str | None = typer.Option(None, "--api-key-env", help="openai backend: name of the env variable holding the key (default OPENAI_API_KEY)."),
        judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="Judge server URL, OpenAI-compatible (mt_bench, alpaca_eval)."),
        judge_model: str | None = typer.Option(None, "--judge-model", help="Judge model name on that server."),
        judge_api_key_env: str | None = typer.Option(None, "--judge-api-key-env", help="Name of the env variable holding the judge's API key (the key is never written)."),
        judge_max_tokens: int | None = typer.Option(None, "--judge-max-tokens", help="Cap on each judgment's tokens (default 2048; must fit the judge's context with the prompt)."),
        judge_prompts: Path | None = typer.Option(None, "--judge-prompts", help="Judge prompts file in FastChat's judge_prompts.jsonl shape (default: sftlab's own)."),
        as_json: bool = typer.Option(False, "--json", help="Print {\"results\": [...]} as JSON."),
    ) -> None:
        """Evaluate a model on benchmark tasks; the model is loaded once for all tasks."""
        from sftlab.evaluate.runner import BACKENDS, evaluate_model

        if backend not in BACKENDS:
            raise UserError(f"--backend {backend!r}: choose from {', '.join(BACKENDS)}")
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}")
        options = sampling_options(samples, temperature, top_p, seed=None, ks=ks)
        if max(options.get("k", [1])) > samples:  # fail before the model loads
            raise UserError(f"--k {ks}: every k must be <= --samples ({samples})")
        from sftlab.evaluate.budget import BudgetForcing
        from sftlab.evaluate.tools import ToolUse

        if budget_forcing is not None:
            options["budget_forcing"] = json_option("--budget-forcing", budget_forcing,
                                                    BudgetForcing)
        if tool_use is not None:
            options["tool_use"] = json_option("--tool-use", tool_use, ToolUse)
        if self_aggregation is not None:
            from sftlab.evaluate.aggregation import SelfAggregation

            options["self_aggregation"] = json_option("--self-aggregation", self_aggregation,
                                                      SelfAggregation)
        if sum(x is not None for x in (budget_forcing, tool_use, self_aggregation)) > 1:
            raise UserError("--budget-forcing, --tool-use and --self-aggregation cannot be "
                            "combined")
        options |= retrieval_options(fewshot, retrieval_embedder, retrieval_pool,
                                     retrieval_batch_size)
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise UserError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
            options["max_new_tokens"] = max_new_tokens
        out_dir = out or Path("sftlab-eval") / Path(model.rstrip("/")).name
        options |= judge_options(judge_base_url, judge_model, judge_api_key_env,
                                 judge_max_tokens, judge_prompts, out_dir)
        if not as_json:
            _show_progress()
        requests = expand_tasks(task, fmt, data, limit, options, config)
        results = evaluate_model(model, adapter=adapter, tasks=requests, backend=backend,
                                 out_dir=out_dir, template=template, seed=seed,
                                 batch_size=batch_size, device=device, dtype=dtype,
                                 backend_options=backend_options(backend, base_url, api_key_env,
                                                                 max_batch_tokens),
                                 progress=not as_json, template_mode=template_mode)
        print_results(results, as_json)
