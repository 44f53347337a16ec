"""Smoke mode (``sftlab run STUDY --smoke``): the whole study's machinery, in minutes, on CPU.

:func:`smoke_study` returns a shrunken copy of a study that exercises every run,
stage and benchmark path of the real one:

- every model -> ``tiny:<family>``, a tiny random model of the same architecture
  family (``family:`` of the model, else inferred from its path or name: olmo,
  qwen, llama; default llama); model names are kept;
- every dataset the machine cannot reach (a hub id, a missing file) -> the embedded
  dataset of the same shape: chat/instruction formats -> the embedded Alpaca file,
  math (and ``category: math``) -> the GSM8K-shaped file, code (magicoder,
  ``category: coding``) -> the MBPP-shaped code tasks, FLAN -> the MMLU-shaped
  auxiliary-train file. Each keeps its name, category and a distinct identity, so
  the plan keeps its shape (252 runs stay 252 runs);
- sizes -> 16, 32, 48, ... (as many as the study has), effective batch <= 8,
  epochs -> at most ``SMOKE_EPOCHS``;
- benchmark limits -> ``SMOKE_LIMIT`` items, generation capped at 48 new tokens
  (``SMOKE_TASK_OPTIONS``, passed by ``run_study``); benchmarks without reachable data use
  the embedded splits (gsm8k, mbpp, mmlu, boolq, hellaswag, nq_open); those that
  have none (math, humaneval) are dropped, and judge benchmarks (mt_bench,
  alpaca_eval) are dropped unless their judge answers at ``base_url``.

The smoke study writes to ``<output_dir>/smoke`` so it never touches the real
study's store. Dropped benchmarks are logged and listed by :func:`smoke_notes`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sftlab.evaluate.tasks.registry import judge_tasks, smoke_tasks
from sftlab.study.resolve import EMBEDDED_PREFIX, TINY_ARCHS, TINY_PREFIX
from sftlab.study.spec import BenchmarkSpec, DatasetSpec, ModelSpec, Study, study_from_dict

log = logging.getLogger(__name__)

SMOKE_SIZES = (16, 32, 48, 64)
SMOKE_EPOCHS = 1
SMOKE_BATCH = 8
SMOKE_LIMIT = 4
SMOKE_SAMPLES = 4  # repeated sampling: at most this many samples (and k) per item
SMOKE_TASK_OPTIONS = {"max_new_tokens": 48}  # random tiny models never stop on their own
EMBEDDED_TASKS = smoke_tasks()  # tasks whose shape the embedded data has (the task registry)
JUDGE_TASKS = judge_tasks()

_ALPACA = {"format": "alpaca", "path": EMBEDDED_PREFIX + "alpaca_data.json"}
_MATH = {"format": "jsonl", "path": EMBEDDED_PREFIX + "gsm8k_train.jsonl",
         "fields": {"instruction": "question", "response": "answer"}}
_CODE = {"format": "jsonl", "path": EMBEDDED_PREFIX + "code_tasks.jsonl",
         "fields": {"instruction": "text", "response": "code"}}
_KNOWLEDGE = {"format": "csv", "path": EMBEDDED_PREFIX + "mmlu_train.csv",
              "fields": {"instruction": "{question}\nA. {choice0}\nB. {choice1}\nC. {choice2}\n"
                                        "D. {choice3}", "response": "{answer}"}}
_BY_FORMAT = {"magicoder": _CODE, "openmathinstruct": _MATH, "mathinstruct": _MATH,
              "flan": _KNOWLEDGE}
_BY_CATEGORY = {"math": _MATH, "coding": _CODE, "code": _CODE}


def infer_family(model: ModelSpec) -> str:
    """The tiny architecture standing in for ``model``: its family, or a guess from its name."""
    if model.family:
        family = model.family.lower()
        return family if family in TINY_ARCHS else _guess(family)
    return _guess(f"{model.path} {model.name}".lower())


def _guess(text: str) -> str:
    for key, arch in (("olmo", "olmo"), ("qwen", "qwen2"), ("llama", "llama")):
        if key in text:
            return arch
    return "llama"


def smoke_study(study: Study) -> Study:
    """A shrunken copy of ``study`` (see the module docstring)."""
    raw = study.model_dump(mode="python", exclude_none=False)
    raw["models"] = [{**m.model_dump(), "path": TINY_PREFIX + infer_family(m)}
                     for m in study.models]
    raw["datasets"] = [_smoke_dataset(study, d) for d in study.datasets]
    raw["grid"] = {**raw["grid"], "sizes": list(SMOKE_SIZES[:len(study.grid.sizes)])}
    raw["methods"] = {name: _smoke_method(study, m) for name, m in study.methods.items()}
    shrunk = study_from_dict({**raw, "evaluation": {}})
    raw["evaluation"] = _smoke_evaluation(
        study, min(m.checkpoints()[-1] for m in shrunk.methods.values()))
    raw["output_dir"] = Path(study.out_dir) / "smoke"
    smoke = study_from_dict(raw, source=study.source_path)
    distinct = _distinct_methods(smoke)
    if distinct == smoke.grid.methods:
        return smoke
    raw["grid"]["methods"] = distinct  # shrinking made some methods identical: train them once
    return study_from_dict(raw, source=study.source_path)


def _distinct_methods(study: Study) -> list[str]:
    """The grid's methods less those identical to an earlier one (same run ids)."""
    from sftlab.study.plan import method_identity

    seen: list[tuple] = []
    kept = []
    for name in study.grid.methods:  # a chained method differs by its parent link too
        identity = (method_identity(study, name), study.methods[name].init)
        if identity not in seen:
            seen.append(identity)
            kept.append(name)
    return kept


def smoke_notes(study: Study) -> list[str]:
    """What smoke mode drops from ``study`` (benchmarks without data or judge)."""
    return [f"benchmark {b.task}: {why}" for b in study.evaluation.benchmarks
            if (why := _drop_reason(study, b))]


def _smoke_method(study: Study, method) -> dict:
    """A method shrunk; its own unreachable ``data:`` (not raw text) swapped like a dataset."""
    shrunk = method.smoke(epochs=SMOKE_EPOCHS, batch_size=SMOKE_BATCH)
    data = method.data
    if data is not None and data.format != "text" and not _reachable(study, data.path or ""):
        shrunk["data"] = {**_smoke_dataset(study, data), "name": data.name}
    return shrunk


def _smoke_dataset(study: Study, spec: DatasetSpec) -> dict:
    raw = spec.model_dump()
    if spec.format == "synth":
        from sftlab.synth.study import generator_reachable

        if generator_reachable(study, spec):
            return {**raw, "allow_smaller": True}
        log.info("smoke: dataset %s: its generator does not answer; using embedded math data",
                 spec.name)
        return {"name": spec.name, "category": spec.category, "allow_smaller": True,
                "subset": f"smoke-{spec.name}", **_MATH}
    if _reachable(study, spec.path):
        return {**raw, "allow_smaller": True}
    shape = (_BY_FORMAT.get(spec.format) or _BY_CATEGORY.get(spec.category.lower())
             or _ALPACA)
    return {"name": spec.name, "category": spec.category, "allow_smaller": True,
            "subset": f"smoke-{spec.name}", **shape}


def _reachable(study: Study, path: str) -> bool:
    if path.startswith(EMBEDDED_PREFIX):
        return True
    return Path(study.resolve_path(path)).exists()


def _smoke_evaluation(study: Study, epochs: int) -> dict:
    ev = study.evaluation
    raw = ev.model_dump()
    checkpoints = ev.checkpoints
    if isinstance(checkpoints, list):
        checkpoints = sorted({min(e, epochs) for e in checkpoints})
    raw["checkpoints"] = checkpoints
    raw["benchmarks"] = []
    for bench in ev.benchmarks:
        why = _drop_reason(study, bench)
        if why:
            log.info("smoke: dropping benchmark %s: %s", bench.task, why)
            continue
        raw["benchmarks"].append(_smoke_benchmark(study, bench))
    return raw


def _smoke_benchmark(study: Study, bench: BenchmarkSpec) -> dict:
    raw = bench.model_dump()
    raw["limit"] = min(bench.limit or SMOKE_LIMIT, SMOKE_LIMIT)
    if bench.samples > SMOKE_SAMPLES:
        raw["samples"] = SMOKE_SAMPLES
        raw["k"] = sorted({min(k, SMOKE_SAMPLES) for k in bench.k}) if bench.k else None
    if bench.task not in JUDGE_TASKS and not (bench.data and _reachable(study, bench.data)):
        raw["data"] = EMBEDDED_PREFIX
    return raw


def _drop_reason(study: Study, bench: BenchmarkSpec) -> str | None:
    if bench.task in JUDGE_TASKS:
        judge = bench.judge or study.evaluation.judge
        if judge is None or not judge_reachable(judge.base_url):
            where = judge.base_url if judge else "no judge configured"
            return f"no judge answers ({where}); start one to include it"
        return None
    if bench.data and _reachable(study, bench.data):
        return None
    if bench.task not in EMBEDDED_TASKS:
        return "no embedded data of its shape and its data is not reachable here"
    return None


def judge_reachable(base_url: str, timeout: float = 1.0) -> bool:
    """Whether an OpenAI-compatible server answers ``GET <base_url>/models``."""
    import httpx

    try:
        return httpx.get(base_url.rstrip("/") + "/models", timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False
