"""``prepare(study)``: every training set of a study's plan, written once and cached.

For each dataset: load its native rows -> normalise to (instruction, response)
-> drop exact duplicates -> drop examples longer than ``max_length`` under ANY
model's tokenizer -> a seeded, nested sample of each grid size (see
:mod:`sftlab.data.sampling`). Mixtures (``all``, ``leave_one_out``) are then
built from those samples. Files:

``<out_dir>/data/<key>.jsonl``
    one JSON object per line: ``id, source, instruction, response, prompt,
    completion`` (``prompt`` = the template rendered up to the response,
    ``completion`` = the response; training appends EOS). ``key`` is the plan's
    ``TrainingSetSpec.key`` (a per-dataset sample's key, or a mixture's).
``<out_dir>/data/manifest.json``
    per source (keyed by what its examples depend on): counts, per-model drops and
    token-length percentiles, the source file's sha256; per training set: rows,
    sha256, sources, parts. Entries of other studies sharing the folder are kept.

Re-running is a cache hit when a source's sample files exist, their sha256 and
the source file's sha256 match the manifest: nothing is read or tokenised and no
file is rewritten. Everything new is staged and renamed only once every source
has succeeded (:mod:`sftlab.data.staging`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sftlab import atomic
from sftlab.data.filtering import dedupe, length_filter, load_tokenizer, tokenizer_refs
from sftlab.data.loaders import load_source
from sftlab.data.mixtures import mixture_lines
from sftlab.data.readers import looks_local
from sftlab.data.records import training_row
from sftlab.data.sampling import derive_seed, permutation, take_sample
from sftlab.data.staging import Staging, remove_stale_temps
from sftlab.errors import UserError
from sftlab.fingerprint import file_sha256, folder_sha256
from sftlab.study.plan import (
    content_hash,
    dataset_identity,
    filter_identity,
    plan,
    sample_key,
    source_content,
)
from sftlab.study.spec import DatasetSpec, Study
from sftlab.study.template import render_prompt
from sftlab.synth.study import data_path as synth_data_path
from sftlab.synth.study import ensure_generated

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass
class SourceReport:
    """What happened to one dataset (``dropped_by_length`` and ``token_lengths`` per model)."""

    name: str
    read: int
    bad: int
    filtered: int
    duplicates: int
    dropped_by_length: dict[str, int]
    kept: int
    token_lengths: dict[str, dict[str, int]]
    smaller_sizes: list[int]  # sizes that got every survivor (allow_smaller)
    cached: bool

    def to_json(self) -> dict:
        return {"name": self.name, "read": self.read, "bad": self.bad,
                "duplicates": self.duplicates, "dropped_by_length": self.dropped_by_length,
                "kept": self.kept, "filtered": self.filtered,
                "smaller_sizes": self.smaller_sizes, "token_lengths": self.token_lengths}


@dataclass
class TrainingSetReport:
    """One prepared file. ``setting`` is ``sample`` for a per-dataset sample that no
    run of the plan trains on alone (a part of mixtures only)."""

    key: str
    setting: str
    size: int
    sources: list[str]
    rows: int
    path: str
    sha256: str
    cached: bool

    def to_json(self) -> dict:
        return {"key": self.key, "setting": self.setting, "size": self.size,
                "sources": self.sources, "rows": self.rows, "path": self.path,
                "sha256": self.sha256}


@dataclass
class PrepareReport:
    data_dir: Path
    training_sets: list[TrainingSetReport] = field(default_factory=list)
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def cached(self) -> bool:
        """True when nothing had to be prepared."""
        return all(s.cached for s in self.sources) and all(t.cached for t in self.training_sets)

    def to_json(self) -> dict:
        return {"training_sets": [t.to_json() for t in self.training_sets],
                "sources": [s.to_json() for s in self.sources]}


def data_dir(study: Study) -> Path:
    """``<out_dir>/data``."""
    return study.out_dir / "data"


def training_set_path(study: Study, key: str) -> Path:
    """Where the prepared training set ``key`` is (``<out_dir>/data/<key>.jsonl``)."""
    return data_dir(study) / f"{key}.jsonl"


@dataclass(frozen=True)
class _Source:
    """A dataset of the study and everything its preparation is keyed on."""

    spec: DatasetSpec
    where: str  # "datasets[2] (lima)"
    path: str  # resolved local path, or the hub id
    key: str  # hash of what its examples depend on
    samples: dict[int, str]  # size -> sample key
    fingerprint: str | None  # sha256 of the local file(s); None for a hub dataset


def prepare(study: Study, *, progress: bool = True) -> PrepareReport:
    """Write every training set of ``study``'s plan (and the per-dataset samples)."""
    the_plan = plan(study)
    folder = data_dir(study)
    remove_stale_temps(folder)
    manifest = read_manifest(folder)
    needed = {k for ts in the_plan.training_sets for k in (ts.key, *ts.parts)}
    # a study whose methods all read their own data (or none) prepares no grid dataset
    sources = [s for s in _sources(study) if needed & set(s.samples.values())]
    todo = [s for s in sources if not _source_cached(s, manifest, folder)]
    with Staging(folder) as staging, _progress_bar(progress) as bar:
        tokenizers = [(ref, load_tokenizer(ref)) for ref in tokenizer_refs(study)] if todo else []
        problems: list[str] = []
        for source in todo:
            problems += _prepare_source(study, source, tokenizers, staging, manifest, bar)
        if problems:
            raise UserError(problems, where="prepare")
        mixtures_done = _prepare_mixtures(study, the_plan.training_sets, staging, manifest)
        mixtures_done |= _prepare_link_sets(study, the_plan.training_sets, staging, manifest)
        staging.commit()
    _write_manifest(folder, manifest)
    return _report(study, the_plan.training_sets, sources, manifest,
                   fresh={s.key for s in todo}, fresh_sets=mixtures_done)


# --- sources ------------------------------------------------------------------------


def _sources(study: Study) -> list[_Source]:
    out, seen = [], {}
    for i, spec in enumerate(study.datasets):
        key = content_hash({"dataset": dataset_identity(spec), "filter": filter_identity(study)})
        if key in seen:
            raise UserError(f"datasets[{i}] ({spec.name}) reads the same data as "
                            f"'{seen[key]}' with the same settings; keep one of them")
        seen[key] = spec.name
        where = f"datasets[{i}] ({spec.name})"
        if spec.format == "synth":  # generated on demand; keyed by what it generates
            path, fingerprint = str(synth_data_path(study, spec)), source_content(study, spec)
        else:
            path = study.resolve_path(spec.path)
            fingerprint = _fingerprint(path, where=f"datasets[{i}].path", study=study)
        out.append(_Source(spec, where, path, key,
                           {size: sample_key(study, spec, size) for size in study.grid.sizes},
                           fingerprint))
    return out


def _fingerprint(path: str, *, where: str, study: Study) -> str | None:
    local = Path(path)
    if local.is_file():
        return file_sha256(local)
    if local.is_dir():
        return folder_sha256(local)
    if looks_local(path):
        looked = [str(local.absolute())]
        if not local.is_absolute() and study.source_path is not None:
            looked.insert(0, str((Path(study.source_path).parent / local).absolute()))
        raise UserError(f"data file not found: {path} (looked for {' and '.join(looked)})",
                        where=where)
    return None


def _source_cached(source: _Source, manifest: dict, folder: Path) -> bool:
    entry = manifest["sources"].get(source.key)
    if (entry is None or entry.get("name") != source.spec.name
            or entry.get("fingerprint") != source.fingerprint):
        if entry is not None and entry.get("fingerprint") != source.fingerprint:
            log.warning("%s: the source changed since it was last prepared; preparing it again",
                        source.where)
        return False
    if entry.get("smaller_sizes") and not source.spec.allow_smaller:
        return False
    return all(_file_matches(folder, key, manifest, [source.spec.name])
               for key in source.samples.values())


def _file_matches(folder: Path, key: str, manifest: dict, sources: list[str]) -> bool:
    entry = manifest["training_sets"].get(key)
    path = folder / f"{key}.jsonl"
    return (entry is not None and entry.get("sources") == sources and path.is_file()
            and file_sha256(path) == entry.get("sha256"))


def _prepare_source(study: Study, source: _Source, tokenizers: list, staging: Staging,
                    manifest: dict, bar) -> list[str]:
    """Load, dedupe, filter and sample one source; stage its files. Returns size problems."""
    spec = source.spec
    if spec.format == "synth":
        ensure_generated(study, spec)
    loaded = load_source(spec, source.path, where=source.where)
    examples, duplicates = dedupe(loaded.examples)
    del loaded.examples
    task = bar.add_task(f"{spec.name}: tokenising", total=len(examples) * len(tokenizers)) \
        if bar is not None else None
    result = length_filter(examples, study.template, study.max_length, tokenizers,
                           on_batch=(lambda n: bar.advance(task, n)) if bar is not None else None)
    survivors = [ex for ex, keep in zip(examples, result.keep, strict=True) if keep]
    entry = {"name": spec.name, "format": spec.format, "path": spec.path,
             "fingerprint": source.fingerprint, "read": loaded.read, "bad": loaded.bad,
             "filtered": loaded.filtered, "duplicates": duplicates,
             "dropped_by_length": result.dropped, "kept": len(survivors),
             "token_lengths": result.lengths, "smaller_sizes": [],
             "samples": {str(size): key for size, key in source.samples.items()}}
    log.info("%s: read %d, bad %d, filtered %d, duplicates %d, dropped by length %s, kept %d",
             source.where, loaded.read, loaded.bad, loaded.filtered, duplicates, result.dropped,
             len(survivors))
    order = permutation(len(survivors), derive_seed(study.seed, dataset_identity(spec)))
    problems = []
    for size, key in source.samples.items():
        try:
            chosen = take_sample(order, size, allow_smaller=spec.allow_smaller, name=spec.name,
                                 detail=_counts_detail(entry))
        except UserError as err:
            problems += err.problems
            continue
        if len(chosen) < size:
            entry["smaller_sizes"].append(size)
            log.warning("dataset '%s': size %d asked for, %d examples survive; "
                        "allow_smaller: taking them all", spec.name, size, len(chosen))
        lines = (training_row(survivors[i], render_prompt(study.template, survivors[i].instruction))
                 for i in chosen)
        rows, sha = staging.write_lines(data_dir(study) / f"{key}.jsonl", lines)
        manifest["training_sets"][key] = {"setting": "sample", "size": size,
                                          "sources": [spec.name], "parts": [], "rows": rows,
                                          "file": f"{key}.jsonl", "sha256": sha}
    manifest["sources"][source.key] = entry
    return problems


def _counts_detail(entry: dict) -> str:
    drops = ", ".join(f"{m} {n}" for m, n in entry["dropped_by_length"].items())
    return (f" (read {entry['read']}, bad {entry['bad']}, filtered {entry['filtered']}, "
            f"duplicates {entry['duplicates']}, longer than max_length under: {drops})")


# --- mixtures -----------------------------------------------------------------------


def _prepare_mixtures(study: Study, sets: list, staging: Staging, manifest: dict) -> set[str]:
    """Stage every mixture whose file or parts changed; return the keys written."""
    written = set()
    folder = data_dir(study)
    for spec in sets:
        if spec.setting == "single":
            continue
        part_shas = [manifest["training_sets"][k]["sha256"] for k in spec.parts]
        entry = manifest["training_sets"].get(spec.key)
        if (entry is not None and entry.get("parts_sha256") == part_shas
                and _file_matches(folder, spec.key, manifest, list(spec.sources))):
            continue
        parts = [staging.path(folder / f"{k}.jsonl") for k in spec.parts]
        seed = derive_seed(study.seed, spec.key)
        rows, sha = staging.write_lines(folder / f"{spec.key}.jsonl", mixture_lines(parts, seed))
        manifest["training_sets"][spec.key] = {
            "setting": spec.setting, "size": spec.size, "sources": list(spec.sources),
            "parts": list(spec.parts), "parts_sha256": part_shas, "rows": rows,
            "file": f"{spec.key}.jsonl", "sha256": sha}
        written.add(spec.key)
    return written


# --- a method's own data ------------------------------------------------------------


def _prepare_link_sets(study: Study, sets: list, staging: Staging, manifest: dict) -> set[str]:
    """Stage each method's own ``data:`` set (all of it) that is not on disk yet."""
    from sftlab.data.text import link_lines

    written = set()
    folder = data_dir(study)
    for spec in sets:
        if spec.setting != "link" or _file_matches(folder, spec.key, manifest, list(spec.sources)):
            continue
        method = next(m for m, c in study.methods.items() if c.data is not None
                      and (c.data.name or m) == spec.sources[0])
        data = study.methods[method].data
        rows, sha = staging.write_lines(folder / f"{spec.key}.jsonl", link_lines(
            study, data, name=spec.sources[0], where=f"methods.{method}.data"))
        if rows == 0:
            raise UserError(f"methods.{method}.data: {data.path} holds no documents")
        manifest["training_sets"][spec.key] = {
            "setting": "link", "size": rows, "sources": list(spec.sources), "parts": [],
            "rows": rows, "file": f"{spec.key}.jsonl", "sha256": sha}
        written.add(spec.key)
    return written


# --- manifest and report ------------------------------------------------------------


def read_manifest(folder: Path) -> dict:
    """The data folder's manifest (an empty one when absent or unreadable)."""
    empty = {"format": MANIFEST_FORMAT, "sources": {}, "training_sets": {}}
    path = folder / MANIFEST
    if not path.is_file():
        return empty
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s); preparing everything again", path, err)
        return empty
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return empty
    manifest.setdefault("sources", {})
    manifest.setdefault("training_sets", {})
    return manifest


def _write_manifest(folder: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    path = folder / MANIFEST
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic.write_text(path, text)


def _report(study: Study, sets: list, sources: list[_Source], manifest: dict,
            fresh: set[str], fresh_sets: set[str]) -> PrepareReport:
    folder = data_dir(study)
    report = PrepareReport(folder.absolute())
    fresh_samples = {k for s in sources if s.key in fresh for k in s.samples.values()}
    for source in sources:
        e = manifest["sources"][source.key]
        report.sources.append(SourceReport(
            source.spec.name, e["read"], e["bad"], e["filtered"], e["duplicates"],
            e["dropped_by_length"], e["kept"], e["token_lengths"], e["smaller_sizes"],
            cached=source.key not in fresh))
    listed = [(s.key, s.setting) for s in sets]
    in_plan = {key for key, _ in listed}
    listed += [(k, "sample") for s in sources for k in s.samples.values() if k not in in_plan]
    for key, setting in listed:
        e = manifest["training_sets"][key]
        report.training_sets.append(TrainingSetReport(
            key, setting, e["size"], e["sources"], e["rows"],
            str(training_set_path(study, key).absolute()), e["sha256"],
            cached=key not in fresh_samples and key not in fresh_sets))
    return report


@contextmanager
def _progress_bar(enabled: bool) -> Iterator:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield bar
