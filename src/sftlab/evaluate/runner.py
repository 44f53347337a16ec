"""Evaluate one model on many tasks (``evaluate_model``) or score replayed outputs.

The model is loaded once (one backend) and every task runs on it. Each task
writes its per-item predictions and provenance to ``out_dir`` and returns an
:class:`EvalResult`.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.predictions import predictions_path, predictions_paths, write_predictions
from sftlab.evaluate.sampling import SAMPLED_METRIC
from sftlab.evaluate.tasks.base import Task, TaskContext, TaskOutput, get_task

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm", "openai")
SUMMARY_FIELDS = ("task", "shots", "format", "config", "version", "metric", "value", "stderr",
                  "n", "outcomes")


@dataclass
class TaskRequest:
    """One task to run: name, shot count, format, optional local data and item limit.

    ``options`` carries task-specific settings (``n`` samples, ``temperature``,
    ``max_new_tokens``, a judge's settings for judge tasks); ``config`` names the
    OpenCompass config (or ``gen`` / ``ppl``; None = the default for the shot count).
    """

    task: str
    shots: int
    format: str = "opencompass"
    data: str | None = None
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    config: str | None = None


@dataclass
class EvalResult:
    """The score of one task at one shot count and format, with its provenance."""

    task: str
    shots: int
    format: str
    version: str
    metric: str
    value: float
    stderr: float
    n: int
    outcomes: dict[str, int]
    predictions_path: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    config: str | None = None  # the named OpenCompass config the score reproduces

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failure(self) -> str | None:
        """Why this result is not a score (no item scored, or a value that is not a
        number), else None. Such a result is a failed evaluation, never a done one."""
        counts = ", ".join(f"{k}={v}" for k, v in self.outcomes.items())
        detail = f" (outcomes: {counts})" if counts else ""
        if not self.n:
            return f"{self.task} {self.shots}-shot: no item could be scored (n = 0){detail}"
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            return f"{self.task} {self.shots}-shot: the score is not a number ({self.value}){detail}"
        return None

    def summary(self) -> dict[str, Any]:
        """The fields ``--json`` prints (a NaN stderr, below two items, becomes null)."""
        d = self.to_dict()
        out = {k: d[k] for k in SUMMARY_FIELDS}
        for k in ("value", "stderr"):
            if isinstance(out[k], float) and math.isnan(out[k]):
                out[k] = None
        return out

    def summaries(self) -> list[dict[str, Any]]:
        """The ``--json`` rows: the summary, then a suite's rows (llm-jp-eval: one per
        dataset and per category; its own summary is the ``AVR`` row)."""
        rows = [self.summary()]
        for metric, value in self.extra.items():  # pass@K, cons@K, maj@K of sampled tasks
            if SAMPLED_METRIC.fullmatch(metric) and metric != self.metric:
                se = self.extra.get(f"{metric}_stderr")
                rows.append({**rows[0], "metric": metric, "value": _null_nan(value),
                             "stderr": _null_nan(se)})
        for row in self.extra.get("results", []):
            row = dict(row)
            if isinstance(row.get("value"), float) and math.isnan(row["value"]):
                row["value"] = None
            if isinstance(row.get("stderr"), float) and math.isnan(row["stderr"]):
                row["stderr"] = None
            rows.append(row)
        return rows


def _null_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("sftlab", "torch", "transformers", "peft", "math-verify", "vllm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def prepare(tasks: list[TaskRequest], template: str | None, seed: int,
            template_mode: str = "instruction") -> list[tuple[Task, TaskContext]]:
    """Resolve and check every task, its data included, before any model is loaded
    (all problems at once)."""
    prepared, problems = [], []
    for req in tasks:
        try:
            task = get_task(req.task)
            ctx = TaskContext(shots=req.shots, format=req.format, data=req.data, limit=req.limit,
                              template=template, seed=seed, options=dict(req.options),
                              config=req.config, template_mode=template_mode)
            task.preflight(ctx)
            prepared.append((task, ctx))
        except UserError as err:
            problems += [f"{err.where}: {p}" if err.where else p for p in err.problems]
    if problems:
        raise UserError(list(dict.fromkeys(problems)))  # one line per distinct problem
    return prepared


def make_backend(backend: str, model: str, *, adapter: str | None, device: str | None,
                 dtype: str | None, batch_size: int | None, options: dict[str, Any]) -> Any:
    """Construct the named backend (heavy imports happen here)."""
    if backend == "hf":
        from sftlab.evaluate.backends.hf import HFBackend

        return HFBackend(model, adapter=adapter, device=device, dtype=dtype,
                         batch_size=batch_size, **options)
    if backend == "openai":
        from sftlab.evaluate.backends.openai import OpenAIBackend

        return OpenAIBackend(model, **options)
    if backend == "vllm":
        from sftlab.evaluate.backends.vllm import VLLMBackend

        return VLLMBackend(model, adapter=adapter, dtype=dtype, **options)
    raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")


def _backend_defaults(backend: str, template: str | None, options: dict | None) -> dict:
    """With a study template, score choices on prompt and answer tokenised apart, as the
    model was trained (the template's prompt ends in a space that lm-eval would move)."""
    options = dict(options or {})
    if backend == "hf" and template is not None:
        options.setdefault("pair_split", "separate")
    return options


def template_mode_of(ctx: TaskContext) -> str | None:
    """How the study template wrapped the prompts (None without one); ``rounds`` applies to
    the opencompass format, other formats are wrapped as the instruction."""
    if ctx.template is None:
        return None
    return ctx.template_mode if ctx.format == "opencompass" else "instruction"


def config_provenance(ctx: TaskContext) -> dict[str, Any]:
    """The config an evaluation reproduces, its kind and what sftlab substitutes."""
    if ctx.config is None:
        return {"config": None}
    from sftlab.evaluate.tasks.opencompass import CONFIGS

    cfg = CONFIGS[ctx.config]
    out: dict[str, Any] = {"config": cfg.name, "config_kind": cfg.kind}
    if cfg.postprocess:
        out["postprocess"] = cfg.postprocess
    if cfg.notes:
        out["config_notes"] = cfg.notes
    return out


def _paths(prepared: list[tuple[Task, TaskContext]], out_dir: Path) -> list[Path]:
    return predictions_paths(Path(out_dir), [(t.name, c.shots, c.format) for t, c in prepared])


def _result(task: Task, ctx: TaskContext, out: TaskOutput, path: Path,
            backend_prov: dict[str, Any], elapsed: float) -> EvalResult:
    provenance = {
        "task": task.name, "version": task.version, "format": ctx.format, "shots": ctx.shots,
        **config_provenance(ctx),
        "seed": ctx.seed, "limit": ctx.limit, "data": ctx.data,
        "use_template": ctx.template is not None, "template": ctx.template,
        "template_mode": template_mode_of(ctx),
        "options": ctx.options, "notes": out.notes, "backend": backend_prov,
        "versions": _versions(), "elapsed_s": round(elapsed, 3),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # the file also records the secondary metrics (acc_norm, per-turn ratings, win rate ...)
    write_predictions(path, out.rows, {**provenance, "metrics": out.extra})
    return EvalResult(task.name, ctx.shots, ctx.format, task.version, out.metric, out.value,
                      out.stderr, out.n, out.outcomes, str(path), provenance, out.extra,
                      ctx.config)


def evaluate_model(model: str, *, adapter: str | None = None, tasks: list[TaskRequest],
                   backend: str = "hf", out_dir: Path, template: str | None = None,
                   seed: int = 1234, batch_size: int | None = None, device: str | None = None,
                   dtype: str | None = None, backend_options: dict | None = None,
                   progress: bool = True, template_mode: str = "instruction") -> list[EvalResult]:
    """Load ``model`` once and run every task on it; write predictions under ``out_dir``."""
    prepared = prepare(tasks, template, seed, template_mode)
    start = time.perf_counter()
    if progress:
        log.info("loading %s (%s backend) ...", model, backend)
    be = make_backend(backend, model, adapter=adapter, device=device, dtype=dtype,
                      batch_size=batch_size, options=_backend_defaults(backend, template,
                                                                       backend_options))
    if progress:
        log.info("model ready in %.1fs; %d evaluation(s) to run", time.perf_counter() - start,
                 len(prepared))
    backend_prov = be.provenance()
    results = []
    paths = _paths(prepared, out_dir)
    for k, (task, ctx) in enumerate(prepared, 1):
        if progress:
            log.info("[%d/%d] %s %d-shot (%s) ...", k, len(prepared), task.name, ctx.shots,
                     ctx.format)
        start = time.perf_counter()
        out = task.run(be, ctx)
        elapsed = time.perf_counter() - start
        res = _result(task, ctx, out, paths[k - 1], backend_prov, elapsed)
        if progress:
            log.info("[%d/%d] %s %d-shot (%s): %s = %.2f (n=%d, %.1fs)", k, len(prepared),
                     task.name, ctx.shots, ctx.format, out.metric, out.value, out.n, elapsed)
        results.append(res)
    return results


def evaluate_adapters(model: str, adapters: dict[str, str | None], *, tasks: list[TaskRequest],
                      backend: str = "hf", out_dir: Path, template: str | None = None,
                      seed: int = 1234, batch_size: int | None = None, device: str | None = None,
                      dtype: str | None = None, backend_options: dict | None = None,
                      template_mode: str = "instruction") -> dict[str, list[EvalResult]]:
    """Evaluate several PEFT adapters of one base ``model`` (name -> adapter folder; None =
    the base model itself) on the same tasks; predictions go to ``out_dir/<name>/``.

    With the ``vllm`` backend one engine serves the base weights and every adapter is a
    LoRA request on it (``set_adapter``); other backends load base + adapter per entry.
    """
    prepared = prepare(tasks, template, seed, template_mode)
    options = _backend_defaults(backend, template, backend_options)
    shared = None
    if backend == "vllm":
        shared = make_backend(backend, model, adapter=None, device=device, dtype=dtype,
                              batch_size=batch_size, options=options)
    results: dict[str, list[EvalResult]] = {}
    for name, adapter in adapters.items():
        if shared is not None:
            shared.set_adapter(adapter)
            be = shared
        else:
            be = make_backend(backend, model, adapter=adapter, device=device, dtype=dtype,
                              batch_size=batch_size, options=options)
        prov = be.provenance()
        results[name] = []
        for (task, ctx), path in zip(prepared, _paths(prepared, Path(out_dir) / name),
                                     strict=True):
            start = time.perf_counter()
            out = task.run(be, ctx)
            results[name].append(_result(task, ctx, out, path, prov,
                                         time.perf_counter() - start))
    return results


def score_predictions(request: TaskRequest, predictions: str | Path, *,
                      out_dir: Path | None = None, template: str | None = None,
                      seed: int = 1234, samples: int | None = None,
                      template_mode: str = "instruction") -> EvalResult:
    """Score outputs produced elsewhere (``sftlab score``).

    Every id must have the same number of rows: ``samples``, else the file's most common
    count (an id repeated by mistake is refused, not counted twice). Items with no prediction are scored as missing and listed in
    ``provenance["notes"]["missing_ids"]``.
    """
    from sftlab.evaluate.backends.replay import load_outputs

    [(task, ctx)] = prepare([request], template, seed, template_mode)
    outputs = load_outputs(predictions, samples=samples)
    start = time.perf_counter()
    out = task.replay(outputs, ctx)
    out.notes = {**(out.notes or {}), "samples": samples or "the file's count",
                 "missing_ids": [r["item_id"] for r in out.rows if r["item_id"] not in outputs]}
    known = {r["item_id"] for r in out.rows}
    unknown = [i for i in outputs if i not in known]
    if unknown and request.limit is None:
        raise UserError(f"{len(unknown)} prediction id(s) match no item of {task.name}: "
                        f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                        "(ids are the benchmark's own ids, else 0-based row indices)",
                        where=str(predictions))
    prov = {"backend": "replay", "predictions": str(predictions)}
    if out_dir is None:
        return EvalResult(task.name, ctx.shots, ctx.format, task.version, out.metric, out.value,
                          out.stderr, out.n, out.outcomes, None,
                          {"notes": out.notes, **config_provenance(ctx), **prov}, out.extra,
                          ctx.config)
    return _result(task, ctx, out, predictions_path(Path(out_dir), task.name, ctx.shots,
                                                    ctx.format), prov, time.perf_counter() - start)
