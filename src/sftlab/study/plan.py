"""Grid expansion: a study becomes runs and evaluations, each named by a content hash.

A run id hashes everything that can change the trained weights (base model
weights, method hyperparameters, training data identity, seed, template,
max length, precision, and for a chained run its parent's run id) and nothing
else: not names or categories (labels), not ``output_dir``, not another method's
hyperparameters, not execution details (micro-batch size, gradient
checkpointing). The same study gives the same ids on any machine.

Chains: a method with ``init: <method>`` starts from that method's final
checkpoint for the same model (and the same grid cell when the parent trains on
the grid's data). Every method of ``grid.methods`` is planned with its ancestors,
parents before children; a method with its own ``data:`` (or none, like
``upscale``) has one run per parent run (or per model), one that trains on the
grid's data has one per grid cell.
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
    data_key: str | None  # the prepared training set (None: the method reads no data)
    left_out: str | None = None  # the dataset a leave_one_out run omits
    parent: str | None = None  # the run id this run starts from (``init:``)
    chain: str = ""  # method names from the root of the chain to this one: "cpt>upscale>sft"
    unit: str = "epoch"  # checkpoints are <unit>-<n>
    checkpoints: tuple[int, ...] = ()  # the checkpoint numbers it writes; the last is final
    weights: str = "full"  # what a checkpoint holds: full | lora | dora

    def to_dict(self) -> dict:
        return {**asdict(self), "datasets": list(self.datasets),
                "checkpoints": list(self.checkpoints)}

    @classmethod
    def from_dict(cls, raw: dict) -> RunSpec:
        return cls(**{**raw, "datasets": tuple(raw["datasets"]),
                      "checkpoints": tuple(raw["checkpoints"])})


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
    config: str | None = None  # the named OpenCompass config (opencompass format)
    benchmark: int = 0  # its entry in evaluation.benchmarks (one task may be listed twice)


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

    def parent_of(self, run: RunSpec) -> RunSpec | None:
        return self.run_index[run.parent] if run.parent else None

    def ancestors(self, run: RunSpec) -> list[RunSpec]:
        """The runs ``run`` starts from, root first."""
        chain, link = [], self.parent_of(run)
        while link is not None:
            chain.insert(0, link)
            link = self.parent_of(link)
        return chain

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
    return study.methods[method].identity()


def link_data_key(study: Study, data: DatasetSpec) -> str:
    """The prepared set of a method's own ``data:`` (all of it, keyed on its content)."""
    return content_hash({"link_data": dataset_identity(data), "filter": filter_identity(study),
                         "content": source_fingerprint(study.resolve_path(data.path))})


def chain_order(study: Study) -> list[str]:
    """``grid.methods`` and their ancestors, each after the method it starts from."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        parent = study.methods[name].init
        if parent is not None:
            visit(parent)
        order.append(name)

    for name in study.grid.methods:
        visit(name)
    return order


@dataclass(frozen=True)
class _Cell:
    """Where a run's training data comes from, and its labels."""

    setting: str
    datasets: tuple[str, ...]
    size: int
    data_key: str | None
    left_out: str | None = None
    parts: tuple[str, ...] = ()


def plan(study: Study) -> Plan:
    """Expand the study's grid and method chains into runs, training sets and evaluations."""
    _check_checkpoint_epochs(study)
    sets: dict[str, TrainingSetSpec] = {}
    cells = _grid_cells(study)
    runs: list[RunSpec] = []
    for model in study.models:
        made: dict[str, list[RunSpec]] = {}
        for method in chain_order(study):
            made[method] = _method_runs(study, model, method, cells, made, sets)
            runs += made[method]
    _check_distinct_runs(study, runs)
    epochs = {r.id: _eval_epochs(study, r) for r in runs}
    return Plan(study, runs, list(sets.values()), _evaluations(study, runs, epochs), epochs)


def _grid_cells(study: Study) -> list[_Cell]:
    samples = {(d.name, s): sample_key(study, d, s) for d in study.datasets
               for s in study.grid.sizes}
    cells = []
    for size in study.grid.sizes:
        for setting, names, left_out in _data_choices(study):
            parts = tuple(samples[(n, size)] for n in names)
            key = parts[0] if setting == "single" else mixture_key(list(parts))
            cells.append(_Cell(setting, tuple(names), size, key, left_out,
                               () if setting == "single" else parts))
    return cells


def _check_distinct_runs(study: Study, runs: list[RunSpec]) -> None:
    """Two grid cells that would train the very same run (one run id) are an error: two
    methods with identical hyperparameters, or two models with the same path."""
    first: dict[str, RunSpec] = {}
    clashes: set[str] = set()
    for r in runs:
        other = first.setdefault(r.id, r)
        if other is r:
            continue
        if other.method != r.method:
            clashes.add(f"grid.methods: methods '{other.method}' and '{r.method}' have identical "
                        "hyperparameters, so they would train the same runs; change one or "
                        "list it once")
        elif other.model != r.model:
            clashes.add(f"models: '{other.model}' and '{r.model}' are the same model (path, "
                        "revision); list it once")
        elif set(other.datasets) != set(r.datasets):
            mine = sorted(set(r.datasets) - set(other.datasets))
            theirs = sorted(set(other.datasets) - set(r.datasets))
            clashes.add(f"datasets: '{', '.join(mine)}' reads the same data as "
                        f"'{', '.join(theirs)}' (same source, fields and filters), so they "
                        "would train the same runs; list it once")
        else:
            clashes.add(f"grid: run {r.id} ({r.model}, {r.method}) appears twice; list each "
                        "method, size and dataset once")
    if clashes:
        raise UserError(sorted(clashes), where=str(study.source_path or "study"))


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


def _method_runs(study: Study, model, method: str, cells: list[_Cell],
                 made: dict[str, list[RunSpec]], sets: dict[str, TrainingSetSpec]) -> list[RunSpec]:
    spec = study.methods[method]
    parents: list[RunSpec | None] = list(made[spec.init]) if spec.init else [None]
    if spec.data is None and spec.READS_DATA:  # the grid's training sets
        by_cell = {(p.setting, p.datasets, p.size): p for p in parents if p is not None}
        for cell in cells:
            sets.setdefault(cell.data_key, TrainingSetSpec(
                key=cell.data_key, setting=cell.setting, size=cell.size, sources=cell.datasets,
                parts=cell.parts))
        return [_run(study, model, method, cell,
                     by_cell.get((cell.setting, cell.datasets, cell.size), parents[0]))
                for cell in cells]
    key = None
    if spec.data is not None:
        key = link_data_key(study, spec.data)
        sets.setdefault(key, TrainingSetSpec(key=key, setting="link", size=0,
                                             sources=(spec.data.name or method,)))
    out = []
    for parent in parents:
        if spec.data is not None and (parent is None or not parent.size):
            cell = _Cell("single", (spec.data.name or method,), 0, key)  # its own data's label
        elif parent is not None:  # labelled like the grid cell (or link) it starts from
            cell = _Cell(parent.setting, parent.datasets, parent.size, key, parent.left_out)
        else:
            cell = _Cell("single", (), 0, None)
        out.append(_run(study, model, method, cell, parent))
    return out


def _run(study: Study, model, method: str, cell: _Cell, parent: RunSpec | None) -> RunSpec:
    spec = study.methods[method]
    identity = {
        "model": {"path": study.model_key(model.path), "revision": model.revision,
                  "trust_remote_code": model.trust_remote_code},
        "method": method_identity(study, method),
        "data": cell.data_key,
        "seed": study.seed,
        "precision": study.training.precision,
    }
    if parent is not None:
        identity["parent"] = parent.id
    numbers = tuple(spec.checkpoints())
    return RunSpec(
        id=content_hash(identity), model=model.name, model_path=model.path, method=method,
        method_type=spec.type, setting=cell.setting, datasets=cell.datasets,
        size=cell.size, epochs=numbers[-1], data_key=cell.data_key, left_out=cell.left_out,
        parent=parent.id if parent else None,
        chain=f"{parent.chain}>{method}" if parent else method,
        unit=spec.unit, checkpoints=numbers, weights=spec.weights)


def _eval_epochs(study: Study, run: RunSpec) -> list[int]:
    wanted = study.evaluation.checkpoints
    if wanted == "every_epoch":
        return list(run.checkpoints)
    if wanted == "final":
        return [run.checkpoints[-1]]
    return sorted(set(wanted) & set(run.checkpoints))


def _check_checkpoint_epochs(study: Study) -> None:
    wanted = study.evaluation.checkpoints
    if not isinstance(wanted, list):
        return
    problems = [
        f"evaluation.checkpoints: epoch {e} is past the last epoch "
        f"({study.methods[m].checkpoints()[-1]}) of method '{m}'"
        for m in study.grid.methods for e in wanted if e > study.methods[m].checkpoints()[-1]
    ]
    if problems:
        raise UserError(problems, where=str(study.source_path or "study"))


def eval_identity(study: Study, bench: BenchmarkSpec, shots: int) -> dict:
    """Everything that changes a score: the task and its version (a changed prompt or
    scorer bumps it), format, config, shots, data, sampling settings, template, judge,
    and for retrieved few-shot examples the embedder's and the pool's bytes."""
    from sftlab.evaluate.tasks.registry import spec_of

    ev = study.evaluation
    sampling = bench.sampling_options(shots)
    return {"task": bench.task, "version": spec_of(bench.task).version,
            "config": bench.config_for(shots),
            "shots": shots, "format": bench.format, "data": bench.data,
            "limit": bench.limit, "seed": ev.seed, "max_new_tokens": bench.max_new_tokens,
            "template": study.template if ev.use_template else None,
            "template_mode": (ev.template_mode if ev.use_template and bench.format == "opencompass"
                              else None),
            "judge": _judge_identity(ev.judge_for(bench)),
            # only when sampled, so the ids of greedy evaluations stay what they were
            **({"sampling": sampling} if sampling else {}),
            **({"retrieval": retrieval_identity(study, bench)} if "retrieval" in sampling else {})}


def retrieval_identity(study: Study, bench: BenchmarkSpec) -> dict:
    """sha256 of the embedder's files and of the pool file (paths found as the study
    finds data), so another embedder or pool, or changed bytes, is another evaluation."""
    from sftlab.evaluate.retrieval import embedder_folder, embedder_key

    assert bench.retrieval is not None
    settings = bench.retrieval.resolved(study.resolve_path)
    where = f"evaluation.benchmarks[{study.evaluation.benchmarks.index(bench)}]"
    try:
        out = {"embedder_sha256": embedder_key(embedder_folder(settings.embedder))}
        if settings.pool is not None:
            if not Path(settings.pool.path).is_file():
                raise UserError(f"retrieval.pool.path: no such file '{settings.pool.path}'")
            out["pool_sha256"] = file_sha256(settings.pool.path)
    except UserError as err:
        raise UserError([f"{where}.{p}" for p in err.problems],
                        where=str(study.source_path or "study")) from None
    return out


def _judge_identity(judge) -> dict | None:
    """What about a judge changes its verdicts (not its URL, key variable or concurrency)."""
    return None if judge is None else {"model": judge.model, "max_tokens": judge.max_tokens}


def _evaluations(study: Study, runs: list[RunSpec], epochs: dict[str, list[int]]) -> list[EvalSpec]:
    targets: list[tuple[str, str, int, str | None]] = []  # (target, model, epoch, method)
    if study.evaluation.include_base:
        targets += [(f"base-{m.name}", m.name, 0, None) for m in study.models]
    targets += [(r.id, r.model, e, r.method) for r in runs for e in epochs[r.id]]
    base_paths = {f"base-{m.name}": study.model_key(m.path) for m in study.models}
    out = []
    for index, bench in enumerate(study.evaluation.benchmarks):
        chosen = [t[:3] for t in targets if bench.methods is None or t[3] in bench.methods]
        for shots in bench.shots:
            ident = eval_identity(study, bench, shots)
            for target, model, epoch in chosen:
                who = base_paths.get(target, target)
                eid = content_hash({"target": who, "epoch": epoch, "eval": ident})
                out.append(EvalSpec(eid, target, model, epoch, bench.task, shots, bench.format,
                                    ident["config"], index))
    return out
