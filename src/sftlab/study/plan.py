"""Grid expansion: a study becomes runs and evaluations, each named by a content hash.

A run id hashes everything that can change the trained weights (base model
weights, method hyperparameters, training data identity, seed, template,
max length, precision) and nothing else: not names or categories (labels),
not ``output_dir``, not another method's hyperparameters, not execution
details (micro-batch size, gradient checkpointing). The same study gives the
same ids on any machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from sftlab.errors import UserError
from sftlab.fingerprint import file_sha256
from sftlab.study.spec import BenchmarkSpec, DatasetSpec, Study

EXECUTION_ONLY = ("micro_batch_size", "gradient_checkpointing")


def content_hash(obj: object, length: int = 12) -> str:
    """A stable short hash of a JSON-serialisable object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    id: str
    model: str
    model_path: str
    method: str
    method_type: str
    setting: str
    datasets: tuple[str, ...]
    size: int
    epochs: int
    data_key: str
    left_out: str | None = None  # the dataset a leave_one_out run omits

    def to_dict(self) -> dict:
        return {**asdict(self), "datasets": list(self.datasets)}


@dataclass(frozen=True)
class TrainingSetSpec:
    """One prepared training set: a dataset sample, or a mixture of samples."""

    key: str
    setting: str
    size: int
    sources: tuple[str, ...]
    parts: tuple[str, ...] = ()  # keys of the per-dataset samples a mixture is made of


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation: a checkpoint (or a base model) x benchmark x shots."""

    id: str
    target: str  # run id, or "base-<model>"
    model: str
    epoch: int  # 0 = the base model
    task: str
    shots: int
    format: str


@dataclass
class Plan:
    study: Study
    runs: list[RunSpec]
    training_sets: list[TrainingSetSpec]
    evaluations: list[EvalSpec]
    checkpoint_epochs: dict[str, list[int]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        ckpts = sum(len(e) for e in self.checkpoint_epochs.values())
        bases = len(self.study.models) if self.study.evaluation.include_base else 0
        return {
            "runs": len(self.runs),
            "training_sets": len(self.training_sets),
            "checkpoints": ckpts,
            "base_models": bases,
            "evaluations": len(self.evaluations),
        }

    @cached_property
    def run_index(self) -> dict[str, RunSpec]:
        """Runs by id."""
        return {r.id: r for r in self.runs}

    @cached_property
    def eval_index(self) -> dict[str, EvalSpec]:
        """Evaluations by id."""
        return {e.id: e for e in self.evaluations}

    def run(self, run_id: str) -> RunSpec:
        """The run with this id, or a unique prefix of at least 4 characters."""
        if run_id in self.run_index:
            return self.run_index[run_id]
        for run in self.runs:
            if len(run_id) >= 4 and run.id.startswith(run_id):
                return run
        raise UserError(f"no run '{run_id}' in study '{self.study.name}' (see `sftlab plan`)")


def dataset_identity(spec: DatasetSpec) -> dict:
    """What about a dataset changes the examples it yields (not its name or category;
    for an inline synth spec, not how its endpoints are reached)."""
    data = spec.model_dump(exclude={"name", "category", "allow_smaller"}, mode="json")
    if spec.synth is not None:
        from sftlab.synth.spec import parse_spec, spec_identity

        data["synth"] = spec_identity(parse_spec(spec.synth))
    return data


def filter_identity(study: Study) -> dict:
    """What the preparation of any sample depends on, besides the dataset."""
    return {
        "seed": study.seed,
        "template": study.template,
        "max_length": study.max_length,
        "tokenizers": sorted(f"{study.model_key(m.path)}@{m.revision or ''}" for m in study.models),
    }


def sample_key(study: Study, dataset: DatasetSpec, size: int) -> str:
    return content_hash({"dataset": dataset_identity(dataset), "size": size,
                         "filter": filter_identity(study),
                         "content": source_content(study, dataset)})


def source_content(study: Study, dataset: DatasetSpec) -> str | None:
    """The content a dataset's examples come from: its files' sha256 (None for a hub id),
    or for ``format: synth`` the key of what it generates."""
    if dataset.format == "synth":
        from sftlab.synth.study import synth_key

        return synth_key(study, dataset)
    return source_fingerprint(study.resolve_path(dataset.path))


def source_fingerprint(path: str) -> str | None:
    """sha256 of a local source's bytes (a folder: of its files), None for a hub id.

    Editing a local data file therefore changes every run id trained on it.
    """
    local = Path(path)
    if not local.exists():
        return None
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(local) if local.is_dir() else "").encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def mixture_key(part_keys: list[str]) -> str:
    return content_hash({"mixture": sorted(part_keys)})


def method_identity(study: Study, method: str) -> dict:
    spec = study.methods[method]
    data = spec.model_dump(exclude=set(EXECUTION_ONLY), mode="json")
    data["type"] = study.method_type(method)
    if data["type"] == "full":
        data.pop("lora", None)
    return data


def plan(study: Study) -> Plan:
    """Expand the study's grid into runs, training sets and evaluations."""
    _check_checkpoint_epochs(study)
    samples = {(d.name, s): sample_key(study, d, s) for d in study.datasets
               for s in study.grid.sizes}
    sets: dict[str, TrainingSetSpec] = {}
    runs: list[RunSpec] = []
    for model in study.models:
        for method in study.grid.methods:
            for size in study.grid.sizes:
                for setting, names, left_out in _data_choices(study):
                    parts = [samples[(n, size)] for n in names]
                    key = parts[0] if setting == "single" else mixture_key(parts)
                    sets.setdefault(key, TrainingSetSpec(
                        key=key, setting=setting, size=size, sources=tuple(names),
                        parts=() if setting == "single" else tuple(parts)))
                    runs.append(_run(study, model, method, setting, names, size, key, left_out))
    epochs = {r.id: _eval_epochs(study, r.epochs) for r in runs}
    return Plan(study, runs, list(sets.values()), _evaluations(study, runs, epochs), epochs)


def _data_choices(study: Study):
    names = [d.name for d in study.datasets]
    for setting in study.grid.settings:
        if setting == "single":
            for n in names:
                yield setting, [n], None
        elif setting == "all":
            yield setting, names, None
        else:
            for n in names:
                yield setting, [m for m in names if m != n], n


def _run(study: Study, model, method: str, setting: str, names: list[str], size: int,
         data_key: str, left_out: str | None) -> RunSpec:
    identity = {
        "model": {"path": study.model_key(model.path), "revision": model.revision,
                  "trust_remote_code": model.trust_remote_code},
        "method": method_identity(study, method),
        "data": data_key,
        "seed": study.seed,
        "precision": study.training.precision,
    }
    return RunSpec(
        id=content_hash(identity), model=model.name, model_path=model.path, method=method,
        method_type=study.method_type(method), setting=setting, datasets=tuple(names),
        size=size, epochs=study.methods[method].epochs, data_key=data_key, left_out=left_out)


def _eval_epochs(study: Study, epochs: int) -> list[int]:
    wanted = study.evaluation.checkpoints
    if wanted == "every_epoch":
        return list(range(1, epochs + 1))
    if wanted == "final":
        return [epochs]
    return sorted(set(wanted))


def _check_checkpoint_epochs(study: Study) -> None:
    wanted = study.evaluation.checkpoints
    if not isinstance(wanted, list):
        return
    problems = [
        f"evaluation.checkpoints: epoch {e} is past the last epoch ({study.methods[m].epochs}) "
        f"of method '{m}'"
        for m in study.grid.methods for e in wanted if e > study.methods[m].epochs
    ]
    if problems:
        raise UserError(problems, where=str(study.source_path or "study"))


def eval_identity(study: Study, bench: BenchmarkSpec, shots: int) -> dict:
    ev = study.evaluation
    return {"task": bench.task, "shots": shots, "format": bench.format, "data": bench.data,
            "limit": bench.limit, "seed": ev.seed, "max_new_tokens": bench.max_new_tokens,
            "template": study.template if ev.use_template else None,
            "judge": _judge_identity(ev.judge_for(bench)),
            # only when sampled, so the ids of greedy evaluations stay what they were
            **({"sampling": sampling} if (sampling := bench.sampling_options()) else {})}


def _judge_identity(judge) -> dict | None:
    """What about a judge changes its verdicts (not its URL, key variable or concurrency)."""
    return None if judge is None else {"model": judge.model, "max_tokens": judge.max_tokens}


def _evaluations(study: Study, runs: list[RunSpec], epochs: dict[str, list[int]]) -> list[EvalSpec]:
    targets: list[tuple[str, str, int]] = []
    if study.evaluation.include_base:
        targets += [(f"base-{m.name}", m.name, 0) for m in study.models]
    targets += [(r.id, r.model, e) for r in runs for e in epochs[r.id]]
    base_paths = {f"base-{m.name}": study.model_key(m.path) for m in study.models}
    out = []
    for bench in study.evaluation.benchmarks:
        for shots in bench.shots:
            ident = eval_identity(study, bench, shots)
            for target, model, epoch in targets:
                who = base_paths.get(target, target)
                eid = content_hash({"target": who, "epoch": epoch, "eval": ident})
                out.append(EvalSpec(eid, target, model, epoch, bench.task, shots, bench.format))
    return out
