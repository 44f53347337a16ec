"""The job handlers the orchestrator sends to workers: prepare, train, evaluate.

Each takes a JSON payload (the study as a dict, plus what the job is about) and
returns a JSON-serialisable dict. They only call the stages' own functions; the
one thing they add is making evaluation results content-addressed artefacts:
``predictions/<eval_id>.jsonl`` and ``evals/<eval_id>.json`` (the score record),
both written atomically, the record last, so a record that exists is complete.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sftlab import atomic, jsonio

log = logging.getLogger(__name__)


def study_of(payload: dict):
    """The study a payload carries (validated again, paths resolved as the driver did)."""
    from sftlab.study.spec import study_from_dict

    source = payload.get("study_source")
    return study_from_dict(payload["study"], source=Path(source) if source else None)


def _threads() -> None:
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def prepare_job(payload: dict) -> dict:
    """Prepare every training set of the study (idempotent and cached by the data stage)."""
    from sftlab.data.prepare import prepare

    study = study_of(payload)
    report = prepare(study, progress=False)
    data_dir = Path(study.out_dir) / "data"
    keys = [k for k in payload["keys"] if (data_dir / f"{k}.jsonl").is_file()]
    return {"keys": keys, "report": _plain(report)}


def train_job(payload: dict) -> dict:
    """Train one run (resuming from its newest complete checkpoint)."""
    from sftlab.study.plan import RunSpec
    from sftlab.train.run import completed_epochs, train_run

    _threads()
    study = study_of(payload)
    run = RunSpec.from_dict(payload["run"])
    run = dataclasses.replace(run, model_path=study.resolve_model_path(run.model_path))
    summary = train_run(study, run, progress=False)
    return {"epochs": completed_epochs(study, run.id), "summary": _plain(summary)}


def evaluate_job(payload: dict) -> dict:
    """Evaluate one checkpoint (or base model) on its pending benchmarks, loading it once."""
    from sftlab.evaluate.runner import evaluate_model

    _threads()
    study = study_of(payload)
    if "adapters" in payload:
        return _evaluate_adapters(study, payload)
    model, adapter = _model_and_adapter(study, payload)
    evals = payload["evals"]
    tasks = _task_requests(study, evals)
    out_dir = Path(study.out_dir)
    scratch = out_dir / "jobs" / f"scratch-{payload['job_id']}"
    shutil.rmtree(scratch, ignore_errors=True)
    ev = study.evaluation
    results = evaluate_model(
        model, adapter=adapter, tasks=tasks, backend=ev.backend, out_dir=scratch,
        template=study.template if ev.use_template else None, seed=ev.seed,
        batch_size=ev.batch_size, progress=False, template_mode=ev.template_mode)
    outcome = store_results(out_dir, evals, results)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcome


def store_results(out_dir: Path, evals: list[dict], results: list) -> dict:
    """``{"evals": records, "failed": {eval_id: reason}}``: a result with no scored item
    or a score that is not a number gets no record, so its unit fails (printed, exit 1,
    retried by ``--retry-failed``) instead of being stored as done with NaN."""
    records, failed = [], {}
    for spec, result in zip(evals, results, strict=True):
        reason = result.failure()
        if reason:
            failed[spec["id"]] = reason
        else:
            records.append(_store_artefacts(out_dir, spec, result.to_dict()))
    return {"evals": records, "failed": failed}


def _task_requests(study, evals: list[dict]) -> list:
    from sftlab.evaluate.runner import TaskRequest

    return [TaskRequest(task=e["task"], shots=e["shots"], format=e["format"],
                        data=study.resolve_path(e["data"]) if e.get("data") else None,
                        limit=e.get("limit"), options=_task_options(study, e),
                        config=e.get("config"))
            for e in evals]


def _evaluate_adapters(study, payload: dict) -> dict:
    """Several LoRA checkpoints of one base model on the same benchmarks, through one
    engine (the vLLM backend serves each checkpoint as a LoRA request)."""
    from sftlab.evaluate.runner import evaluate_adapters
    from sftlab.methods.links import checkpoint_path
    from sftlab.study.plan import plan

    runs = plan(study).run_index
    members = payload["adapters"]
    adapters = {f"{m['target']}-e{m['epoch']}":
                str(checkpoint_path(study, runs[m["target"]], m["epoch"])) for m in members}
    out_dir = Path(study.out_dir)
    scratch = out_dir / "jobs" / f"scratch-{payload['job_id']}"
    shutil.rmtree(scratch, ignore_errors=True)
    ev = study.evaluation
    results = evaluate_adapters(
        study.resolve_model_path(payload["model_path"]), adapters,
        tasks=_task_requests(study, members[0]["evals"]), backend=ev.backend, out_dir=scratch,
        template=study.template if ev.use_template else None, seed=ev.seed,
        batch_size=ev.batch_size, template_mode=ev.template_mode)
    outcome: dict = {"evals": [], "failed": {}}
    for member, name in zip(members, adapters, strict=True):
        part = store_results(out_dir, member["evals"], results[name])
        outcome["evals"] += part["evals"]
        outcome["failed"].update(part["failed"])
    shutil.rmtree(scratch, ignore_errors=True)
    return outcome


def _model_and_adapter(study, payload: dict) -> tuple[str, str | None]:
    """(model, adapter) of a checkpoint: an adapter's base is the model its run started
    from (the study's model, or a chained run's parent result)."""
    from sftlab.methods.links import checkpoint_path, start_model
    from sftlab.study.plan import plan

    if payload["epoch"] == 0:
        return study.resolve_model_path(payload["model_path"]), None
    the_plan = plan(study)
    run = the_plan.run_index[payload["target"]]
    ckpt = checkpoint_path(study, run, payload["epoch"])
    if run.weights == "full":
        return str(ckpt), None
    return start_model(study, the_plan, run), str(ckpt)


def _task_options(study, spec: dict) -> dict[str, Any]:
    """Task options: the driver's (smoke mode caps generation), the benchmark's sampling
    (retrieval paths resolved), the judge (the benchmark's,
    else the evaluation's) and the judge's shared cache."""
    options = dict(spec.get("options") or {}) | (spec.get("sampling") or {})
    if options.get("retrieval"):  # the embedder and pool paths found as the study finds data
        from sftlab.evaluate.retrieval import Retrieval

        settings = Retrieval.model_validate(options["retrieval"])
        options["retrieval"] = settings.resolved(study.resolve_path).model_dump()
    if spec.get("max_new_tokens"):  # the study's cap; smoke mode's cap may be lower
        options["max_new_tokens"] = min(spec["max_new_tokens"],
                                        options.get("max_new_tokens", spec["max_new_tokens"]))
    judge = spec.get("judge") or (study.evaluation.judge.model_dump()
                                  if study.evaluation.judge else None)
    if judge:
        options.update(judge=judge, judge_cache=str(Path(study.out_dir) / "judgments.sqlite"))
    return options


def _store_artefacts(out_dir: Path, spec: dict, result: dict) -> dict:
    """Move the predictions to ``predictions/<eval_id>.jsonl``; write ``evals/<eval_id>.json``."""
    eval_id = spec["id"]
    predictions = None
    if result.get("predictions_path"):
        final = out_dir / "predictions" / f"{eval_id}.jsonl"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(result["predictions_path"], final)
        predictions = str(final)
    record = {"eval_id": eval_id, **_plain(result), "predictions_path": predictions}
    atomic.write_text(out_dir / "evals" / f"{eval_id}.json", jsonio.dumps(record))
    return record


def _plain(value: Any) -> Any:
    """A JSON-friendly copy (dataclasses and paths become dicts and strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
