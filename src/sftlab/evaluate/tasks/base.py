"""The task interface and the task registry.

A *task* is one benchmark in one of two formats (``opencompass`` or ``lm-eval``):
it loads the benchmark's items, builds backend requests, and scores answers.
Every task has a ``version`` that changes whenever its prompts or scoring change;
the version is recorded with every score.

How a task plugs in
-------------------
Every task is an object with a ``spec`` (its registry entry: ``name``, ``version``,
``paper_shots`` = the shot counts the reference study used, ...), ``allowed_shots(fmt)``
and two entry points:

- ``run(backend, ctx) -> TaskOutput``: evaluate a model through a
  :class:`~sftlab.evaluate.backends.base.Backend` (``sftlab eval``);
- ``replay(outputs, ctx) -> TaskOutput``: score outputs produced elsewhere
  (``sftlab score``); ``outputs`` maps item id -> list of generated texts.

Two ready-made families implement both entry points from a few small hooks:

- :class:`~sftlab.evaluate.tasks.choice.ChoiceTask` (log-likelihood over
  choices: mmlu, hellaswag, boolq) implements ``query(item, shots, fmt)``
  returning a :class:`ChoiceQuery`;
- :class:`~sftlab.evaluate.tasks.generation.GenerationTask` (generate-until:
  math, gsm8k, mbpp, humaneval, nq_open) implements ``query`` returning a
  :class:`GenQuery` and ``score(items, outputs, ctx)`` returning per-item rows.

A task that needs another flow (a judge: ``mt_bench``, ``alpaca_eval``)
subclasses :class:`Task` directly and implements ``run`` (and ``replay`` if it
can score outputs produced elsewhere) itself. It may call ``backend.generate``
any number of times, read its own data (``ctx.data``) and its own options
(``ctx.options``, e.g. the judge's base URL and model), and must return a
:class:`TaskOutput` whose ``rows`` follow the per-item prediction shape:
``item_id``, ``prompt_hash``, ``prompt``, ``output``, ``extracted``, ``correct``
(bool or None), ``score`` (float or None: a rating, a preference),
``outcome`` (``pass`` / ``fail`` / ``timeout`` / ``error`` / ``parse_failure`` /
``missing``). Register it with a :class:`~sftlab.evaluate.tasks.registry.TaskSpec`
in :mod:`sftlab.evaluate.tasks.registry` (name, version, formats, category, scale,
aggregation, judge or not, smoke data); every list of tasks is derived from there.

``value`` and ``stderr`` in a :class:`TaskOutput` are in percent (MT-Bench: on
its 1-10 scale); ``extra`` holds secondary metrics (``acc_norm``, GSM8K
``flexible``, MMLU ``weighted``...).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.tasks.registry import TaskSpec, spec_of, task_names

__all__ = ["get_task", "task_names"]

TEMPLATE_MODES = ("instruction", "rounds")


@dataclass
class TaskContext:
    """Everything a task needs to know about one evaluation besides the model."""

    shots: int
    format: str = "opencompass"
    data: str | None = None  # local path (file or folder) or hub id; None = task default hub id
    limit: int | None = None
    template: str | None = None  # study template with {instruction} and {response}
    seed: int = 1234
    options: dict[str, Any] = field(default_factory=dict)  # task-specific (judge, n samples, ...)
    # the named OpenCompass config (opencompass format), or "gen" / "ppl"; None = the default
    # for the shot count. ``Task.check`` replaces it by the resolved name.
    config: str | None = None
    # how ``template`` wraps the prompt: "instruction" (the whole prompt is its {instruction})
    # or "rounds" (OpenCompass's meta template: each round wrapped, opencompass format)
    template_mode: str = "instruction"


@dataclass
class Item:
    """One benchmark item: its id (the benchmark's own id or the 0-based row index) and row."""

    id: str
    doc: dict[str, Any]


@dataclass
class ChoiceQuery:
    """A log-likelihood question: pick the continuation the model finds most likely.

    ``mode`` chooses how the choices are compared:
    ``"sum"`` (summed log-probability of the continuation, i.e. ``acc``) or
    ``"mean_full"`` (lowest mean NLL over context + continuation tokens, the
    OpenCompass PPL rule when no in-context examples mask the context).
    ``acc_norm`` (by characters of the continuation) is always reported too.
    """

    context: str
    choices: list[str]
    gold: int
    mode: str = "sum"


@dataclass
class GenQuery:
    """A generate-until request description. ``rounds``: the prompt's OpenCompass structure
    (raw strings, HUMAN / BOT rounds) when it has one, so a study template can wrap each
    round (``template_mode: rounds``)."""

    prompt: str
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    rounds: tuple[Any, ...] | None = None


@dataclass
class TaskOutput:
    """What a task returns: headline metric, per-item rows, outcome counts, notes."""

    metric: str
    value: float  # percent (MT-Bench: 1-10)
    stderr: float
    n: int
    rows: list[dict[str, Any]]
    outcomes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of every task: behaviour only. What the task *is* (name, version,
    formats, shot counts...) is its :class:`~sftlab.evaluate.tasks.registry.TaskSpec`,
    set by :func:`get_task`."""

    spec: TaskSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def paper_shots(self) -> tuple[int, ...]:
        return self.spec.paper_shots

    @property
    def formats(self) -> tuple[str, ...]:
        return self.spec.formats

    def allowed_shots(self, fmt: str) -> tuple[int, ...] | None:
        """Shot counts this task supports in ``fmt``; None = any non-negative count."""
        return None

    def shot_counts(self, ctx: TaskContext) -> tuple[int, ...] | None:
        """Shot counts this evaluation may use (default: ``allowed_shots`` of its format)."""
        return self.allowed_shots(ctx.format)

    def check(self, ctx: TaskContext) -> None:
        """Raise UserError when the format or shot count is not supported."""
        if ctx.format not in self.formats:
            raise UserError(f"task {self.name}: unknown format {ctx.format!r} "
                            f"(choose from {', '.join(self.formats)})")
        if "retrieval" in ctx.options and not self.spec.retrieval_field:
            from sftlab.evaluate.tasks.registry import retrieval_tasks

            raise UserError(f"task {self.name}: fewshot retrieval needs a task whose few-shot "
                            f"examples are chosen by question (one of: "
                            f"{', '.join(sorted(retrieval_tasks()))})")
        allowed = self.shot_counts(ctx)
        if ctx.shots < 0 or (allowed is not None and ctx.shots not in allowed):
            choices = ", ".join(map(str, allowed)) if allowed else "a count >= 0"
            raise UserError(f"task {self.name}: unsupported shot count {ctx.shots} "
                            f"in format {ctx.format} (supported: {choices})")
        if ctx.limit is not None and ctx.limit < 1:
            raise UserError(f"task {self.name}: --limit must be >= 1, got {ctx.limit}")
        ctx.config = self.resolve_config(ctx)
        if ctx.template_mode not in TEMPLATE_MODES:
            raise UserError(f"unknown template mode {ctx.template_mode!r} "
                            f"(choose from {', '.join(TEMPLATE_MODES)})")

    def resolve_config(self, ctx: TaskContext) -> str | None:
        """The named config this evaluation reproduces (opencompass format), else None."""
        from sftlab.evaluate.tasks.opencompass import FORMAT, resolve_config

        if ctx.format != FORMAT:
            if ctx.config is not None:
                raise UserError(f"task {self.name}: a config ({ctx.config!r}) is only chosen "
                                f"in the {FORMAT} format, not {ctx.format}")
            return None
        return resolve_config(self.name, ctx.shots, ctx.config)

    def preflight(self, ctx: TaskContext) -> None:
        """Check everything that can be checked before a model is loaded (settings, and for
        tasks that read data: the data files, fields and few-shot examples); raise UserError.

        ``evaluate_model`` calls it for every task first, so a bad ``--data`` fails fast,
        before the model loads and before any file is written. Tasks may keep what they
        loaded for ``run`` (a task object serves one context)."""
        self.check(ctx)

    def run(self, backend: Any, ctx: TaskContext) -> TaskOutput:
        """Evaluate a model through ``backend``."""
        raise NotImplementedError

    def replay(self, outputs: dict[str, list[str]], ctx: TaskContext) -> TaskOutput:
        """Score texts generated elsewhere; ``outputs`` maps item id -> samples."""
        raise UserError(f"task {self.name} cannot score replayed outputs")


# ---------------------------------------------------------------- helpers for rows


def prompt_hash(prompt: str) -> str:
    """Short stable hash of a prompt (sha256, 16 hex)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def count_outcomes(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Count rows by ``outcome``, in a stable order."""
    return dict(sorted(Counter(r["outcome"] for r in rows).items()))


def percent_metric(scores: list[float]) -> tuple[float, float]:
    """(mean, stderr) of 0/1 (or [0,1]) scores, in percent; stderr is NaN below 2 items."""
    from sftlab.evaluate.metrics import mean_stderr

    if not scores:
        return float("nan"), float("nan")
    return 100.0 * sum(scores) / len(scores), 100.0 * mean_stderr(scores)


# ---------------------------------------------------------------- registry


def get_task(name: str) -> Task:
    """A fresh task object by name; unknown names raise UserError with suggestions."""
    spec = spec_of(name)
    task = spec.factory()()
    task.spec = spec
    return task
