"""A study dataset of ``format: synth``: generated during ``prepare``, content-addressed.

The dataset either points at a spec file (``path: synth.yaml``, found as data paths
are) or holds the spec inline (``synth: {...}``). Its rows are written to
``<out_dir>/synth/<key>/`` (``data.jsonl``, ``yield.csv``, ``summary.json``) where
``key`` (:func:`synth_key`) hashes what the rows depend on: the spec without its
transport keys (:func:`~sftlab.synth.spec.spec_identity`) and the content of every
decontamination file. Requests are cached in one file per study,
``<out_dir>/synth/cache.sqlite``, so changing a filter threshold re-filters the cached
answers without asking anything, and ``prepare`` then reads ``data.jsonl`` like any
JSON lines source (``instruction``/``response``).

Decontamination (``decontaminate.benchmarks``, default true) also covers the study's
benchmarks whose ``data`` is local: the file itself, or the evaluation-split files of
a folder (test / validation / prompt, or the file named after the task); hub-only
benchmarks are logged as not covered (list their files under ``decontaminate.files``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sftlab.errors import UserError
from sftlab.study.plan import content_hash, source_fingerprint
from sftlab.study.spec import DatasetSpec, Study
from sftlab.synth.spec import SynthSpec, load_spec, parse_spec, spec_identity

log = logging.getLogger(__name__)
EVAL_SPLITS = ("test", "validation", "prompt")


def spec_of(study: Study, dataset: DatasetSpec) -> tuple[SynthSpec, Path]:
    """The dataset's synth spec and the folder its relative file paths start from."""
    where = _where(study, dataset)
    if dataset.synth is not None:
        base = Path(study.source_path).parent if study.source_path else Path(".")
        return parse_spec(dataset.synth, where=f"{where}.synth"), base
    path = Path(study.resolve_path(dataset.path))
    if not path.is_file():
        raise UserError(f"synth spec not found: {dataset.path}", where=f"{where}.path")
    return load_spec(path), path.parent


def _where(study: Study, dataset: DatasetSpec) -> str:
    return f"datasets[{study.datasets.index(dataset)}]"


def benchmark_files(study: Study) -> list[Path]:
    """Local evaluation files of the study's benchmarks (see the module docstring)."""
    from sftlab.evaluate.datafiles import find_single_task_file, find_split_file

    files: list[Path] = []
    for bench in study.evaluation.benchmarks:
        data = Path(study.resolve_path(bench.data)) if bench.data else None
        if data is None or not data.exists():
            log.info("synth: benchmark %s has no local data; not decontaminated against it "
                     "(list its file under decontaminate.files)", bench.task)
            continue
        if data.is_file():
            files.append(data)
            continue
        found = []
        for split in EVAL_SPLITS:
            try:
                found.append(find_split_file(data, split, (bench.task,)))
            except UserError:  # ambiguous: several files could be the split
                continue
        if not any(found):
            found.append(find_single_task_file(data, (bench.task,)))
        files += [f for f in found if f is not None]
    return sorted(set(files))


def reference_files(study: Study, spec: SynthSpec) -> list[Path]:
    """The study's benchmark files the spec decontaminates against (besides its own)."""
    if spec.decontaminate is None or not spec.decontaminate.benchmarks:
        return []
    return benchmark_files(study)


def synth_key(study: Study, dataset: DatasetSpec) -> str:
    """What the generated rows depend on, hashed (see the module docstring)."""
    spec, base = spec_of(study, dataset)
    identity = spec_identity(spec)
    if spec.decontaminate is not None:
        own = [p if (p := Path(f).expanduser()).is_absolute() else base / p
               for f in spec.decontaminate.files]
        missing = [str(p) for p in own if not p.is_file()]
        if missing:
            raise UserError([f"decontaminate.files: file not found: {m}" for m in missing],
                            where=f"{_where(study, dataset)} (synth)")
        files = own + reference_files(study, spec)
        identity["decontaminate"]["files"] = sorted(
            {source_fingerprint(str(p)) for p in files})
    return content_hash(identity, 16)


def synth_root(study: Study) -> Path:
    return Path(study.out_dir) / "synth"


def data_path(study: Study, dataset: DatasetSpec) -> Path:
    """Where the dataset's generated rows are (or will be)."""
    return synth_root(study) / synth_key(study, dataset) / "data.jsonl"


def is_generated(folder: Path) -> bool:
    """Whether ``folder`` holds a complete run (its summary says so, its data exists)."""
    import json

    summary = folder / "summary.json"
    if not summary.is_file() or not (folder / "data.jsonl").is_file():
        return False
    try:
        return bool(json.loads(summary.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False


def ensure_generated(study: Study, dataset: DatasetSpec) -> Path:
    """Generate the dataset's rows unless a complete run is there; return ``data.jsonl``.

    Raises UserError when requests still fail after their retries (what was answered is
    cached; running again asks only the rest)."""
    from sftlab.synth.pipeline import run_synth

    spec, base = spec_of(study, dataset)
    folder = synth_root(study) / synth_key(study, dataset)
    if not is_generated(folder):
        log.info("%s: generating synthetic data into %s", dataset.name, folder)
        result = run_synth(spec, folder, base_dir=base,
                           cache_path=synth_root(study) / "cache.sqlite",
                           reference_files=reference_files(study, spec))
        if not result.complete:
            raise UserError(f"{result.failed_requests} request(s) failed after retries "
                            f"({'; '.join(result.errors[:3])}); run again: answers so far are "
                            "cached", where=f"{_where(study, dataset)} ({dataset.name})")
    return folder / "data.jsonl"


def generator_reachable(study: Study, dataset: DatasetSpec) -> bool:
    """Whether the dataset's generator answers (smoke mode keeps the dataset then)."""
    from sftlab.smoke import judge_reachable

    try:
        spec, _ = spec_of(study, dataset)
    except UserError:
        return False
    return judge_reachable(spec.generator.base_url)
