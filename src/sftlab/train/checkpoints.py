"""Per-epoch checkpoints: where they live, when they are complete, what they keep.

Layout of one run::

    <output_dir>/ckpt/<run_id>/
        epoch-1/            model (safetensors) + tokenizer, or PEFT adapter + sftlab_base.json
        epoch-2/            ... the newest also holds optimizer.pt, scheduler.pt, rng_state*.pth
        train_log.jsonl     one row per logging step
        .staging/           transformers writes a checkpoint here first (never read as a result)

A checkpoint folder ``epoch-<n>`` appears only by an atomic rename of a folder
that transformers has finished writing, so an ``epoch-<n>`` that exists is
complete. Resume state (optimizer, scheduler, RNG) is stripped from every epoch
but the newest, and from the last one once the run is done. Step-based methods
use the same helpers with ``unit="step"`` (``step-<n>``); a chained run may also
hold ``base/`` (cpt with rope) and ``merged/`` (an adapter merged for its children).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from sftlab import atomic

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^(epoch|step)-(\d+)$")
STAGING = ".staging"
BASE_RECORD = "sftlab_base.json"
DONE_RECORD = "sftlab_done.json"
UPSCALE_RECORD = "sftlab_upscale.json"  # an up-scaled model's layer plan (sftlab.methods.upscale)
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")
RESUME_GLOBS = ("rng_state*.pth",)


def run_dir(output_dir: Path | str, run_id: str) -> Path:
    """``<output_dir>/ckpt/<run_id>``."""
    return Path(output_dir) / "ckpt" / run_id


def epoch_dir(root: Path, epoch: int, unit: str = "epoch") -> Path:
    """``root/<unit>-<n>``: ``epoch-<n>``, or ``step-<n>`` for step-based methods."""
    return root / f"{unit}-{epoch}"


def list_epochs(root: Path, unit: str = "epoch") -> list[int]:
    """Epochs with a complete checkpoint under the run folder ``root``, ascending."""
    if not root.is_dir():
        return []
    found = (CHECKPOINT_RE.match(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m.group(2)) for m in found if m and m.group(1) == unit)


def is_resumable(path: Path) -> bool:
    """Whether ``path`` still holds the optimizer, scheduler and RNG state."""
    return ((path / "optimizer.pt").is_file() and (path / "scheduler.pt").is_file()
            and (path / "trainer_state.json").is_file() and any(path.glob("rng_state*.pth")))


def strip_resume_state(path: Path) -> None:
    """Delete the optimizer / scheduler / RNG files of a checkpoint (keep the model)."""
    for name in RESUME_FILES:
        (path / name).unlink(missing_ok=True)
    for pattern in RESUME_GLOBS:
        for file in path.glob(pattern):
            file.unlink(missing_ok=True)


def clean_partial(root: Path) -> None:
    """Remove leftovers of a killed run: the staging folder and ``*.tmp-*`` folders."""
    if not root.is_dir():
        return
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for path in root.iterdir():
        if ".tmp-" in path.name or path.name.startswith(".trash-"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def repair(root: Path, expected: Sequence[int] | None = None, unit: str = "epoch") -> list[int]:
    """Keep only the unbroken prefix of the ``expected`` checkpoints: one after a missing
    checkpoint (deleted by hand) is removed, with the done record, so the run trains again
    (from the start when the last kept one holds no resume state) and ends with every
    checkpoint on disk. Training is deterministic, so the retrained checkpoints equal the
    removed ones. Returns the numbers removed. ``expected`` defaults to 1, 2, ... up to
    the newest present.
    """
    present = set(list_epochs(root, unit))
    expected = list(expected) if expected is not None else list(range(1, max(present, default=0) + 1))
    kept = 0
    while kept < len(expected) and expected[kept] in present:
        kept += 1
    later = sorted(n for n in present if n in expected[kept:])
    if not later:
        return []
    log.warning("%s: %s %d is missing; removing %s and training them again", root, unit,
                expected[kept], ", ".join(map(str, later)))
    (root / DONE_RECORD).unlink(missing_ok=True)
    for number in later:
        trash = root / f".trash-{number}-{os.getpid()}"
        os.replace(epoch_dir(root, number, unit), trash)
        shutil.rmtree(trash, ignore_errors=True)
    return later


def complete(root: Path, epochs: int) -> bool:
    """Whether every epoch 1..``epochs`` has its checkpoint (and the run its done record)."""
    present = set(list_epochs(root))
    return (root / DONE_RECORD).is_file() and all(e in present for e in range(1, epochs + 1))


def resume_point(root: Path, unit: str = "epoch") -> tuple[int, Path | None]:
    """(newest complete epoch, its folder when it can be resumed from; else None).

    Older epochs are stripped of resume state here too: after a kill between the
    rename of a new epoch and the stripping of the previous one, both hold it.
    """
    epochs = list_epochs(root, unit)
    if not epochs:
        return 0, None
    newest = epoch_dir(root, epochs[-1], unit)
    for older in epochs[:-1]:
        strip_resume_state(epoch_dir(root, older, unit))
    return epochs[-1], newest if is_resumable(newest) else None


def promote(staged: Path, root: Path, epoch: int, extra_files: dict[str, dict],
            unit: str = "epoch") -> Path:
    """Move a finished transformers checkpoint into place as ``<unit>-<epoch>``.

    ``extra_files`` (name -> JSON object) are written into the staged folder first;
    then one ``os.replace`` makes the checkpoint visible. The previous epochs lose
    their resume state afterwards.
    """
    for name, payload in extra_files.items():
        _write_json(staged / name, payload)
    target = epoch_dir(root, epoch, unit)
    if target.exists():  # only after a resume from an older epoch: replace it
        trash = root / f".trash-{epoch}-{os.getpid()}"
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(staged, target)
    for older in list_epochs(root, unit):
        if older != epoch:
            strip_resume_state(epoch_dir(root, older, unit))
    return target


def mark_done(root: Path, summary: dict, unit: str = "epoch") -> dict:
    """Record that every checkpoint is trained; strip the last resume state.

    Returns ``summary`` with ``disk_bytes`` (the run folder after stripping).
    """
    epochs = list_epochs(root, unit)
    if epochs:
        strip_resume_state(epoch_dir(root, epochs[-1], unit))
    summary = {**summary, "disk_bytes": disk_bytes(root)}
    _write_json(root / DONE_RECORD, summary)
    return summary


def read_done(root: Path) -> dict | None:
    path = root / DONE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def disk_bytes(path: Path) -> int:
    """Bytes used by the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _write_json(path: Path, payload: dict) -> None:
    atomic.write_json(path, payload, indent=2, sort_keys=True, ensure_ascii=True)


def read_new_layers(model_path: str | Path) -> list[int]:
    """The decoder layers an up-scaling added to ``model_path`` (its ``sftlab_upscale.json``)."""
    path = Path(model_path) / UPSCALE_RECORD
    if not path.is_file():
        from sftlab.errors import UserError

        raise UserError(f"trainable: new needs a model up-scaled by sftlab; {model_path} has no "
                        f"{UPSCALE_RECORD} (start the method from an `upscale` link with `init:`)")
    return json.loads(path.read_text())["new_layers"]


def rename_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, unless another process (a rank of
    the same torchrun job) got there first; then ``tmp`` is left for the caller to remove."""
    try:
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
