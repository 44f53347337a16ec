"""Run a whole study: prepare -> base evaluations -> train -> checkpoint evaluations -> store.

``run_study(study)`` is ``sftlab run``. Every unit of work is content-addressed
(training sets by data key, runs by run id, evaluations by eval id), so running
again after a crash, or after adding a benchmark or a dataset, does only what is
new. The driver (this process) alone writes the store; jobs run on an executor
(local subprocesses or Ray tasks) and report back plain dicts. A unit is marked
done only once its artefacts are complete on disk:

- training set ``data/<key>.jsonl`` exists (the data stage writes it atomically);
- a run has ``ckpt/<run_id>/epoch-<n>/`` for every epoch (renamed into place);
- an evaluation has ``evals/<eval_id>.json`` (written last, atomically) and its row.

On start the driver reconciles the store with the disk (adopting evaluation
records a killed driver never committed), then schedules jobs as their
dependencies finish: the prepare job first, evaluations of ready checkpoints
next, training last (so scores appear as soon as a checkpoint exists). A chained
run's training waits for its parent's (train-after-train dependencies).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab import atomic
from sftlab.errors import UserError
from sftlab.execute.jobs import Job, JobOutcome
from sftlab.store import STORE_NAME, DriverLock, Store
from sftlab.study.plan import EvalSpec, Plan, RunSpec, content_hash, plan
from sftlab.study.spec import Study

log = logging.getLogger(__name__)

HANDLERS = {
    "prepare": "sftlab.execute.handlers:prepare_job",
    "train": "sftlab.execute.handlers:train_job",
    "evaluate": "sftlab.execute.handlers:evaluate_job",
}
PRIORITY = {"prepare": 0, "evaluate": 1, "train": 2}


def run_study(study: Study, *, executor: Any = "local", address: str | None = None,
              only: str | None = None, smoke: bool = False, retry_failed: bool = False,
              progress: bool = True, handlers: dict[str, str] | None = None) -> dict:
    """Run every pending unit of ``study``; return a summary dict.

    ``executor`` is ``"local"``, ``"ray"`` or an executor object (``slots``,
    ``free()``, ``running()``, ``start(job)``, ``wait(timeout)``, ``close()``);
    ``handlers`` overrides the job functions by kind (tests inject fakes).
    """
    task_options: dict = {}
    if smoke:
        from sftlab.smoke import SMOKE_TASK_OPTIONS, smoke_study

        study = smoke_study(study)
        task_options = dict(SMOKE_TASK_OPTIONS)
    study = with_absolute_out_dir(study)
    the_plan = plan(study)
    out = Path(study.out_dir)
    selection = select(the_plan, only)  # a bad filter fails before anything is written
    if isinstance(executor, str) and executor not in ("local", "ray"):
        raise UserError(f"--executor: unknown executor '{executor}' (expected local or ray)")
    with DriverLock(out, study.name):
        store = Store.open(out / STORE_NAME)
        try:
            write_resolved_study(study)
            sync_plan(store, the_plan)
            store.reset_interrupted(retry_failed=retry_failed)
            reconcile(store, the_plan)
            runner = _make_executor(executor, out, address)
            store.set_meta(study=study.name, slots=runner.slots, executor=runner.name)
            try:
                scheduler = Scheduler(the_plan, store, runner, selection,
                                      {**HANDLERS, **(handlers or {})}, task_options)
                return scheduler.run(progress=progress)
            finally:
                runner.close()
        finally:
            store.close()


def with_absolute_out_dir(study: Study) -> Study:
    """The study with ``output_dir`` made absolute (jobs may run in another cwd)."""
    return study.model_copy(update={"output_dir": Path(study.out_dir).resolve()})


def store_path(study: Study) -> Path:
    return Path(study.out_dir) / STORE_NAME


def write_resolved_study(study: Study) -> None:
    """``study.resolved.yaml``: the spec as run, with library versions."""
    import importlib.metadata as md

    import yaml

    versions = {}
    for name in ("sftlab", "torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    text = yaml.safe_dump({**study.model_dump(mode="json"), "_versions": versions},
                          sort_keys=False, allow_unicode=True)
    atomic.write_text(Path(study.out_dir) / "study.resolved.yaml", text)


# ---------------------------------------------------------------- plan <-> store


def data_unit(key: str) -> str:
    return f"data-{key}"


def sync_plan(store: Store, the_plan: Plan) -> None:
    """Record every unit and run of the plan in the store (states kept)."""
    units: list[tuple] = []
    for ts in the_plan.training_sets:
        units.append((data_unit(ts.key), "prepare", ts.key, 0,
                      f"{ts.setting} {'+'.join(ts.sources)} x{ts.size}",
                      float(ts.size)))
    for r in the_plan.runs:
        units.append((r.id, "train", r.id, r.epochs, _run_label(r), train_work(r)))
    for e in the_plan.evaluations:
        units.append((e.id, "evaluate", e.target, e.epoch,
                      f"{e.task} {e.shots}-shot {e.format}", 1.0))
    runs = [(r.id, r.model, r.method, r.method_type, r.setting, "+".join(r.datasets), r.size,
             r.epochs, r.data_key, r.left_out) for r in the_plan.runs]
    store.sync_units(units, runs)


def train_work(r: RunSpec) -> float:
    """Examples x epochs a run trains on (a mixture holds ``size`` examples per dataset;
    a link with its own data or none counts one unit per checkpoint)."""
    return float(max(r.size, 1) * max(len(r.datasets), 1) * r.epochs)


def planned_work(the_plan: Plan) -> dict[str, float]:
    """Total work of every stage of the plan, in the store's units."""
    return {"prepare": float(sum(ts.size for ts in the_plan.training_sets)),
            "train": sum(train_work(r) for r in the_plan.runs),
            "evaluate": float(len(the_plan.evaluations))}


def _run_label(r: RunSpec) -> str:
    if not r.datasets:
        return f"{r.model} {r.chain}"
    data = {"single": r.datasets[0], "all": "all",
            "leave_one_out": f"all-{r.left_out}"}.get(r.setting, "+".join(r.datasets))
    return f"{r.model} {r.chain} {data}" + (f" x{r.size}" if r.size else "")


def complete_runs(the_plan: Plan) -> set[str]:
    """Runs whose every epoch has a complete checkpoint on disk."""
    return complete_runs_of(the_plan, the_plan.runs)


def reconcile(store: Store, the_plan: Plan) -> dict[str, int]:
    """Make the store agree with the artefacts on disk; return what changed."""
    out = Path(the_plan.study.out_dir)
    states = store.states()
    data_dir = out / "data"
    changes = {"adopted": 0, "reset": 0}
    present = {p.stem for p in data_dir.glob("*.jsonl")} if data_dir.is_dir() else set()
    runs_done = complete_runs(the_plan)
    on_disk = {data_unit(ts.key): ts.key in present for ts in the_plan.training_sets}
    on_disk.update({r.id: r.id in runs_done for r in the_plan.runs})
    found = {u: 0.0 for u, ok in on_disk.items() if ok and states.get(u) != "done"}
    lost = [u for u, ok in on_disk.items() if not ok and states.get(u) == "done"]
    if found:
        store.mark_done({u: None for u in found})
    if lost:
        store.set_state(lost, "pending")
    changes["reset"] = len(lost)
    records = _records_on_disk(out, {e.id for e in the_plan.evaluations
                                     if states.get(e.id) != "done"})
    if records:
        store.add_results([result_row(the_plan, r) for r in records])
        changes["adopted"] = len(records)
    return changes


def _records_on_disk(out: Path, wanted: set[str]) -> list[dict]:
    import json

    folder = out / "evals"
    if not wanted or not folder.is_dir():
        return []
    names = {p.name for p in folder.iterdir()}
    records = [json.loads((folder / f"{i}.json").read_text(encoding="utf-8"))
               for i in sorted(wanted) if f"{i}.json" in names]
    return [r for r in records if r.get("n") and isinstance(r.get("value"), int | float)]


def result_row(the_plan: Plan, record: dict) -> dict:
    """A store ``results`` row from an evaluation record and the plan's labels."""
    spec = the_plan.eval_index[record["eval_id"]]
    run = the_plan.run_index.get(spec.target)
    labels = ({"method": run.chain, "setting": run.setting, "datasets": "+".join(run.datasets),
               "size": run.size} if run else
              {"method": "base", "setting": "base", "datasets": "", "size": 0})
    return {"eval_id": spec.id, "run_id": spec.target, "model": spec.model, **labels,
            "epoch": spec.epoch, "task": spec.task, "shots": spec.shots, "format": spec.format,
            "config": spec.config,
            **{k: record.get(k) for k in ("metric", "value", "stderr", "n", "predictions_path",
                                           "version", "extra", "provenance")}}


# ---------------------------------------------------------------- selection (--only)


@dataclass
class Selection:
    """Which runs and base models a run of the driver touches (``--only``)."""

    runs: set[str]
    bases: set[str]  # "base-<model>" targets
    tasks: set[str] | None = None  # None = every benchmark
    stages: set[str] | None = None  # None = every stage
    run_evals: bool = True  # False: evaluate base models only (stage=base)

    def wants_eval(self, spec: EvalSpec) -> bool:
        if self.tasks is not None and spec.task not in self.tasks:
            return False
        return spec.target in self.bases or (self.run_evals and spec.target in self.runs)


RUN_KEYS = ("id", "model", "method", "method_type", "setting", "size", "dataset")
FILTER_KEYS = (*RUN_KEYS, "task", "stage")
STAGE_NAMES = ("prepare", "train", "evaluate", "base")


def select(the_plan: Plan, only: str | None) -> Selection:
    """Parse ``--only`` (``key=value[|value...][,key=value...]``, AND across keys).

    Keys: id (run id prefix), model, method, method_type, setting, size, dataset,
    task, stage (prepare | train | evaluate | base). No filter selects everything;
    base models are selected unless a run-only key (anything but model, task,
    stage) is given.
    """
    terms = _parse_filter(only)
    _check_values(the_plan, terms)
    chosen = [r for r in the_plan.runs
              if all(_run_matches(r, k, v) for k, v in terms.items() if k in RUN_KEYS)]
    runs = {a.id for r in chosen for a in [*the_plan.ancestors(r), r]}  # a run needs its chain
    run_only = any(k in RUN_KEYS for k in terms if k != "model")
    bases = set() if run_only else {f"base-{m.name}" for m in the_plan.study.models
                                    if "model" not in terms or m.name in terms["model"]}
    stages = terms.get("stage")
    run_evals = True
    if stages is not None:
        unknown = sorted(stages - set(STAGE_NAMES))
        if unknown:
            raise UserError(f"--only: unknown stage {', '.join(unknown)} "
                            f"(expected {', '.join(STAGE_NAMES)})")
        if "base" in stages:
            run_evals = "evaluate" in stages
            stages = (stages - {"base"}) | {"evaluate"}
    return Selection(runs, bases, terms.get("task"), stages, run_evals)


def _parse_filter(only: str | None) -> dict[str, set[str]]:
    terms: dict[str, set[str]] = {}
    for part in (only or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            raise UserError(f"--only: cannot read '{part}' (use key=value with key one of "
                            f"{', '.join(FILTER_KEYS)}; '|' separates alternatives, ',' "
                            "combines keys)")
        terms[key] = {v.strip() for v in value.split("|") if v.strip()}
    return terms


def _known_values(the_plan: Plan) -> dict[str, set[str]]:
    """What each ``--only`` key can match in this plan."""
    study = the_plan.study
    runs = the_plan.runs
    return {
        "model": {m.name for m in study.models},
        "method": {r.method for r in runs},
        "method_type": {r.method_type for r in runs},
        "setting": {r.setting for r in runs},
        "size": {str(r.size) for r in runs},
        "dataset": {d for r in runs for d in r.datasets},
        "task": {b.task for b in study.evaluation.benchmarks},
    }


def _check_values(the_plan: Plan, terms: dict[str, set[str]]) -> None:
    """Refuse ``--only`` values that match nothing in the plan (a typo would select nothing)."""
    known = _known_values(the_plan)
    problems = []
    for key, values in terms.items():
        if not values:
            problems.append(f"--only: '{key}=' names no value")
        elif key == "id":
            unknown = sorted(v for v in values if not any(r.id.startswith(v) for r in the_plan.runs))
            if unknown:
                problems.append(f"--only: no run id starts with {', '.join(unknown)} "
                                "(see `sftlab plan STUDY`)")
        elif key in known:
            unknown = sorted(values - known[key])
            if unknown:
                problems.append(f"--only: unknown {key} {', '.join(unknown)} (the study has "
                                f"{', '.join(sorted(known[key], key=_natural)) or 'none'})")
    if problems:
        raise UserError(problems)


def _natural(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _run_matches(run: RunSpec, key: str, values: set[str]) -> bool:
    if key == "id":
        return any(run.id.startswith(v) for v in values)
    if key == "dataset":
        return bool(values & set(run.datasets))
    return str(getattr(run, key)) in values


# ---------------------------------------------------------------- scheduling


@dataclass
class Scheduler:
    """Turns pending units into jobs, runs them as dependencies finish, records outcomes."""

    the_plan: Plan
    store: Store
    executor: Any
    selection: Selection
    handlers: dict[str, str]
    task_options: dict[str, Any] = field(default_factory=dict)  # added to every evaluation
    states: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, set[str]] = field(default_factory=dict)  # job id -> unfinished deps
    dependents: dict[str, list[Job]] = field(default_factory=lambda: defaultdict(list))
    ready: list[tuple[int, int, Job]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    blocked: set[str] = field(default_factory=set)

    def run(self, *, progress: bool = True) -> dict:
        """Run every job; return counts of what was done, failed, skipped and blocked."""
        from sftlab.execute.progress import StudyProgress

        self.states = self.store.states()
        self._build_jobs()
        start = time.perf_counter()
        with StudyProgress(self._totals(), self._already(), enabled=progress) as bar:
            try:
                self._loop(bar)
            finally:
                running = [u for j in self.executor.running() for u in j.units]
                if running:
                    self.store.set_state(running, "pending")
        return self._summary(self.counters["started"], time.perf_counter() - start)

    def _loop(self, bar) -> None:
        while self.ready or self.executor.running():
            while self.ready and self.executor.free():
                _, _, job = heapq.heappop(self.ready)
                self.store.set_state(list(job.units), "running")
                self.executor.start(job)
                self.counters["started"] += 1
                bar.started(job)
            for outcome in self.executor.wait(0.5):
                self._record(outcome)
                bar.finished(outcome, self._unit_counts(outcome))

    # -- job building ------------------------------------------------------------------

    def _build_jobs(self) -> list[Job]:
        p, sel = self.the_plan, self.selection
        study_payload = _study_payload(p.study)
        wanted = sel.stages or {"prepare", "train", "evaluate"}
        runs = [r for r in p.runs if r.id in sel.runs]
        jobs: list[tuple[Job, set[str]]] = []
        needed_sets = {r.data_key for r in runs if r.data_key}
        data_units = {data_unit(ts.key): ts.size for ts in p.training_sets
                      if ts.key in needed_sets and self._pending(data_unit(ts.key))}
        if data_units and "prepare" in wanted:
            keys = sorted(u.removeprefix("data-") for u in data_units)
            jobs.append((Job(f"prepare-{content_hash(keys)}", "prepare", self.handlers["prepare"],
                             {**study_payload, "keys": keys}, {u: float(w) for u, w in
                                                                data_units.items()},
                             label=f"prepare {len(keys)} training sets"), set()))
        if "train" in wanted:
            for r in runs:
                if self._pending(r.id):
                    needs = {data_unit(r.data_key)} if r.data_key else set()
                    deps = (needs | {r.parent} if r.parent else needs) - self._done_units()
                    jobs.append((self._train_job(r, study_payload), deps))
        if "evaluate" in wanted:
            jobs += self._eval_jobs(study_payload)
        for job, deps in jobs:
            self._enqueue(job, deps)
        return [j for j, _ in jobs]

    def _done_units(self) -> set[str]:
        cached = getattr(self, "_done_cache", None)
        if cached is None:
            cached = {u for u, s in self.states.items() if s == "done"}
            self._done_cache = cached
        return cached

    def _pending(self, unit: str) -> bool:
        return self.states.get(unit) == "pending"

    def _train_job(self, r: RunSpec, study_payload: dict) -> Job:
        return Job(f"train-{r.id}", "train", self.handlers["train"],
                   {**study_payload, "run": r.to_dict()}, {r.id: train_work(r)},
                   gpus=1, label=f"train {_run_label(r)}")

    def _eval_jobs(self, study_payload: dict) -> list[tuple[Job, set[str]]]:
        p = self.the_plan
        groups: dict[tuple[str, int], list[EvalSpec]] = defaultdict(list)
        for e in p.evaluations:
            if self._pending(e.id) and self.selection.wants_eval(e):
                groups[(e.target, e.epoch)].append(e)
        benches = p.study.evaluation.benchmarks
        runs = p.run_index
        model_paths = {m.name: m.path for m in p.study.models}
        out = []
        if p.study.evaluation.backend == "vllm":
            out = self._adapter_jobs(study_payload, groups, benches)
        for (target, epoch), specs in groups.items():
            run = runs.get(target)
            evals = [{**_eval_payload(e, benches[e.benchmark]),
                      "options": self.task_options} for e in specs]
            job_id = f"eval-{target}-e{epoch}-{content_hash(sorted(e.id for e in specs), 8)}"
            payload = {**study_payload, "job_id": job_id, "target": target, "epoch": epoch,
                       "model": specs[0].model, "model_path": model_paths[specs[0].model],
                       "method_type": run.method_type if run else "base", "evals": evals}
            deps = {target} - self._done_units() if run else set()
            label = f"evaluate {_run_label(run) if run else target} epoch {epoch}"
            out.append((Job(job_id, "evaluate", self.handlers["evaluate"], payload,
                            {e.id: 1.0 for e in specs}, gpus=1, label=label), deps))
        return out

    def _adapter_jobs(self, study_payload: dict, groups: dict[tuple[str, int], list[EvalSpec]],
                      benches: list) -> list[tuple[Job, set[str]]]:
        """With the vLLM backend: one job per base model for all its LoRA checkpoints that
        need the same benchmarks (one engine, each checkpoint a LoRA request on it). The
        base model, full and DoRA checkpoints (no vLLM LoRA) and chained links (another
        base) stay one job each and are left in ``groups``."""
        runs = self.the_plan.run_index
        model_paths = {m.name: m.path for m in self.the_plan.study.models}
        shared: dict[tuple[str, tuple], list[tuple[str, int]]] = defaultdict(list)
        for (target, epoch), specs in groups.items():
            run = runs.get(target)
            if run is not None and run.weights == "lora" and run.parent is None:
                benchmarks = tuple(sorted((e.task, e.shots, e.format, e.config or "")
                                          for e in specs))
                shared[(run.model, benchmarks)].append((target, epoch))
        out = []
        for (model, _), members in shared.items():
            adapters = [{"target": t, "epoch": e,
                         "evals": [{**_eval_payload(s, benches[s.benchmark]),
                                    "options": self.task_options}
                                   for s in sorted(groups[(t, e)], key=lambda s: (s.task, s.shots, s.format))]}
                        for t, e in members]
            specs = [s for key in members for s in groups.pop(key)]
            job_id = f"eval-{model}-adapters-{content_hash(sorted(s.id for s in specs), 8)}"
            payload = {**study_payload, "job_id": job_id, "model": model,
                       "model_path": model_paths[model], "adapters": adapters}
            deps = {t for t, _ in members} - self._done_units()
            label = f"evaluate {model}: {len(members)} LoRA checkpoints on one engine"
            out.append((Job(job_id, "evaluate", self.handlers["evaluate"], payload,
                            {s.id: 1.0 for s in specs}, gpus=1, label=label), deps))
        return out

    def _enqueue(self, job: Job, deps: set[str]) -> None:
        bad = [d for d in deps if self.states.get(d) == "failed"]
        if bad:
            self.blocked.update(job.units)
            return
        if not deps:
            self.counters["queued"] += 1
            heapq.heappush(self.ready, (PRIORITY.get(job.kind, 9), self.counters["queued"], job))
            return
        self.waiting[job.id] = set(deps)
        for d in deps:
            self.dependents[d].append(job)

    # -- outcomes ----------------------------------------------------------------------

    def _record(self, outcome: JobOutcome) -> None:
        job = outcome.job
        done, failed, rows = self._collect(outcome)
        total = sum(job.units.values()) or 1.0
        share = {u: outcome.seconds * w / total for u, w in job.units.items()}
        if rows:
            self.store.add_results(rows, {u: share[u] for u in done})
        other_done = {u: share[u] for u in done if u not in {r["eval_id"] for r in rows}}
        if other_done:
            self.store.mark_done(other_done)
        for unit, error in failed.items():
            self.store.set_state([unit], "failed", error=error,
                                 log_tail=outcome.log_tail or None)
        for u in done:
            self.states[u] = "done"
            self._release(u)
        for u in failed:
            self.states[u] = "failed"
            self._block(u)

    def _collect(self, outcome: JobOutcome) -> tuple[set[str], dict[str, str], list[dict]]:
        """(units done, units failed -> error, result rows) of a finished job."""
        job = outcome.job
        if not outcome.ok:
            return set(), dict.fromkeys(job.units, outcome.error or "failed"), []
        result = outcome.result or {}
        out = Path(self.the_plan.study.out_dir)
        if job.kind == "prepare":
            ok = {u for u in job.units
                  if (out / "data" / f"{u.removeprefix('data-')}.jsonl").is_file()}
            missing = "the prepare stage did not write this training set"
            return ok, {u: missing for u in job.units if u not in ok}, []
        if job.kind == "train":
            run = self.the_plan.run_index[next(iter(job.units))]
            if run.id in complete_runs_of(self.the_plan, [run]):
                return {run.id}, {}, []
            return set(), {run.id: f"training ended with epochs {result.get('epochs')} of "
                                   f"{run.epochs} complete"}, []
        records = {r["eval_id"]: r for r in result.get("evals", [])
                   if (out / "evals" / f"{r['eval_id']}.json").is_file()}
        rows = [result_row(self.the_plan, records[u]) for u in job.units if u in records]
        reasons = result.get("failed") or {}
        missing = {u: reasons.get(u, "the evaluation returned no complete result for this "
                                     "benchmark") for u in job.units if u not in records}
        return set(records) & set(job.units), missing, rows

    def _release(self, unit: str) -> None:
        for job in self.dependents.pop(unit, []):
            deps = self.waiting.get(job.id)
            if deps is None:
                continue
            deps.discard(unit)
            if not deps:
                del self.waiting[job.id]
                self._enqueue(job, set())

    def _block(self, unit: str) -> None:
        for job in self.dependents.pop(unit, []):
            if self.waiting.pop(job.id, None) is not None:
                self.blocked.update(job.units)

    # -- accounting --------------------------------------------------------------------

    def _selected_units(self) -> dict[str, list[str]]:
        cached = getattr(self, "_selected_cache", None)
        if cached is not None:
            return cached
        p, sel = self.the_plan, self.selection
        stages = sel.stages or {"prepare", "train", "evaluate"}
        runs = [r for r in p.runs if r.id in sel.runs]
        keys = {r.data_key for r in runs if r.data_key}
        cached = {
            "prepare": [data_unit(k) for k in keys] if "prepare" in stages else [],
            "train": [r.id for r in runs] if "train" in stages else [],
            "evaluate": [e.id for e in p.evaluations if sel.wants_eval(e)]
            if "evaluate" in stages else [],
        }
        self._selected_cache = cached
        return cached

    def _totals(self) -> dict[str, int]:
        return {s: len(u) for s, u in self._selected_units().items()}

    def _already(self) -> dict[str, int]:
        return {s: sum(1 for u in units if self.states.get(u) == "done")
                for s, units in self._selected_units().items()}

    def _unit_counts(self, outcome: JobOutcome) -> dict[str, int]:
        return {s: sum(1 for u in outcome.job.units if self.states.get(u) in ("done", "failed"))
                for s in (outcome.job.kind,)}

    def _summary(self, n_jobs: int, seconds: float) -> dict:
        selected = self._selected_units()
        out: dict[str, Any] = {"study": self.the_plan.study.name,
                               "store": str(store_path(self.the_plan.study)),
                               "jobs": n_jobs, "seconds": round(seconds, 2), "stages": {}}
        for stage, units in selected.items():
            counts = dict.fromkeys(("done", "failed", "pending", "running"), 0)
            for u in units:
                counts[self.states.get(u, "pending")] += 1
            counts["blocked"] = sum(1 for u in units if u in self.blocked)
            out["stages"][stage] = counts
        out["failed"] = sum(c["failed"] for c in out["stages"].values())
        return out


def complete_runs_of(the_plan: Plan, runs: list[RunSpec]) -> set[str]:
    """Which of ``runs`` have every checkpoint (``<unit>-<n>``) on disk."""
    ckpt = Path(the_plan.study.out_dir) / "ckpt"
    return {r.id for r in runs if all((ckpt / r.id / f"{r.unit}-{n}").is_dir()
                                      for n in r.checkpoints)}


def _study_payload(study: Study) -> dict:
    source = str(Path(study.source_path).resolve()) if study.source_path else None
    return {"study": study.model_dump(mode="json"), "study_source": source}


def _eval_payload(spec: EvalSpec, bench) -> dict:
    return {"id": spec.id, "task": spec.task, "shots": spec.shots, "format": spec.format,
            "config": spec.config, "data": bench.data, "limit": bench.limit, "max_new_tokens": bench.max_new_tokens,
            "judge": bench.judge.model_dump() if bench.judge else None,
            "sampling": bench.sampling_options(spec.shots)}


def _make_executor(executor: Any, out: Path, address: str | None):
    if executor == "local":
        from sftlab.execute.local import LocalExecutor

        return LocalExecutor(out / "jobs")
    if executor == "ray":
        from sftlab.execute.ray_executor import RayExecutor

        return RayExecutor(out / "jobs", address=address)
    if isinstance(executor, str):
        raise UserError(f"unknown executor '{executor}' (expected local or ray)")
    return executor


