"""A planned run as its method module sees it, and where each link of a chain lives.

A chained run starts from its parent's final checkpoint. A full-weights checkpoint is
used as it is; an adapter checkpoint (LoRA / DoRA) is merged into the model its run
started from, once, into ``ckpt/<parent_id>/merged/`` (written atomically).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sftlab.study.plan import Plan, RunSpec
from sftlab.study.spec import MethodBase, Study
from sftlab.train import checkpoints

log = logging.getLogger(__name__)

MERGED = "merged"


@dataclass(frozen=True)
class Link:
    """One run to train: its study, its plan record, its method config, where it starts."""

    study: Study
    run: RunSpec
    method: MethodBase
    start: str  # the model it starts from: the base model, or its parent's result
    root: Path  # ckpt/<run_id>
    progress: bool = True

    @property
    def data_path(self) -> Path:
        """Its prepared training set (``data/<key>.jsonl``)."""
        return Path(self.study.out_dir) / "data" / f"{self.run.data_key}.jsonl"

    @property
    def record(self) -> dict:
        """What its adapter checkpoints record about it (``sftlab_base.json``)."""
        return {"run_id": self.run.id, "model": self.run.model, "method": self.run.method,
                "method_type": self.run.method_type, "parent": self.run.parent}


def checkpoint_path(study: Study, run: RunSpec, number: int | None = None) -> Path:
    """``ckpt/<run_id>/<unit>-<n>`` (the final one when ``number`` is None)."""
    n = run.checkpoints[-1] if number is None else number
    return checkpoints.run_dir(study.out_dir, run.id) / f"{run.unit}-{n}"


def start_model(study: Study, the_plan: Plan, run: RunSpec) -> str:
    """The model ``run`` starts from (merging an adapter parent on first use)."""
    return study.methods[run.method].start_model(
        _chain_start(study, the_plan, run), checkpoints.run_dir(study.out_dir, run.id))


def _chain_start(study: Study, the_plan: Plan, run: RunSpec) -> str:
    parent = the_plan.parent_of(run)
    if parent is None:
        return study.resolve_model_path(run.model_path)
    final = checkpoint_path(study, parent)
    if not final.is_dir():
        raise FileNotFoundError(f"run {run.id} starts from {final}, which does not exist yet: "
                                f"train run {parent.id} first")
    if parent.weights == "full":
        return str(final)
    return str(_merged(final, start_model(study, the_plan, parent),
                       checkpoints.run_dir(study.out_dir, parent.id) / MERGED))


def _merged(adapter: Path, base: str, target: Path) -> Path:
    if target.is_dir():
        return target
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("merging adapter %s into %s -> %s", adapter, base, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(tmp)
        checkpoints.rename_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
