"""``type: cpt``: continued pretraining on raw text, full or LoRA / DoRA, optionally with
a longer context by RoPE scaling.

Data: the method's own ``data:`` with ``format: text`` (``.txt`` files, a folder of
them, or JSON lines with a ``text`` field), prepared into ``data/<key>.jsonl``.
Training is TRL's ``SFTTrainer`` on a language-modelling dataset: causal-LM loss on
every token; each document ends with EOS; documents are packed into rows of
``max_length`` tokens (best-fit decreasing, a longer document split:
``packing_strategy="bfd_split"``) and kept apart by position ids that restart at each
document, from which transformers builds a block-diagonal causal mask, so no token
attends across documents (the first token of a document is not predicted from the
previous one either).

``rope`` writes the scaling into the model's config before training, so the
checkpoint's ``config.json`` carries it: ``rope_parameters`` (transformers 5.x keys:
``rope_type`` and ``factor``; for ``yarn`` and ``llama3`` also
``original_max_position_embeddings`` (default: the model's ``max_position_embeddings``),
``low_freq_factor`` / ``high_freq_factor`` (llama3), ``beta_fast`` / ``beta_slow`` /
``attention_factor`` (yarn); the model's ``rope_theta`` is kept) and
``max_position_embeddings`` (default ``original x factor``). The scaled start model is
``ckpt/<run_id>/base/``: links to the start model's files and the new ``config.json``
(an adapter run's checkpoints are adapters over it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sftlab.errors import UserError
from sftlab.methods.links import Link
from sftlab.study.spec import TrainedMethod, _Strict
from sftlab.train import checkpoints


class RopeSpec(_Strict):
    """RoPE scaling for a longer context (``methods.<name>.rope``)."""

    type: Literal["linear", "dynamic", "yarn", "llama3"]
    factor: float = Field(gt=0)
    original_max_position_embeddings: int | None = Field(None, gt=0)  # default: the model's
    max_position_embeddings: int | None = Field(None, gt=0)  # default: original x factor
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    beta_fast: float | None = None  # yarn
    beta_slow: float | None = None  # yarn
    attention_factor: float | None = None  # yarn

    @model_validator(mode="after")
    def _llama3_keys(self) -> RopeSpec:
        if self.type == "llama3" and (self.low_freq_factor is None or self.high_freq_factor is None):
            raise ValueError("rope type llama3 needs `low_freq_factor` and `high_freq_factor`")
        return self


class CPTMethod(TrainedMethod):
    """Continued pretraining on the method's own raw text."""

    type: Literal["cpt"]
    adapter: Literal["full", "lora", "dora"] = "full"
    max_length: int | None = Field(None, gt=0)  # packed row length; default: the study's
    rope: RopeSpec | None = None

    @model_validator(mode="after")
    def _text_data(self) -> CPTMethod:
        if self.data is None:
            raise ValueError("`data`: a cpt method needs its own raw text "
                             "(data: {format: text, path: ...})")
        if self.data.format != "text":
            raise ValueError(f"`data.format`: a cpt method reads raw text (format: text), "
                             f"not '{self.data.format}'")
        return self

    @property
    def weights(self) -> str:
        return self.adapter

    def smoke(self, *, epochs: int, batch_size: int) -> dict:
        """Shrunk like any trained method, rows of at most 256 tokens."""
        shrunk = super().smoke(epochs=epochs, batch_size=batch_size)
        return {**shrunk, "max_length": min(self.max_length or 256, 256)}

    def start_model(self, start: str, root: Path) -> str:
        """With ``rope``: ``ckpt/<run_id>/base``, the start model with its RoPE scaled."""
        return start if self.rope is None else str(extended_base(start, root / "base", self.rope))

    def sft_arguments(self, max_length: int | None, padding_free: bool) -> dict:
        """SFTConfig keys of this objective: loss on every token, packed documents."""
        return {"completion_only_loss": False, "dataset_text_field": "text", "packing": True,
                "packing_strategy": "bfd_split", "max_length": self.max_length or max_length}


CONFIG = CPTMethod


def rope_parameters(config, rope: RopeSpec) -> tuple[dict, int]:
    """(``rope_parameters``, ``max_position_embeddings``) of ``config`` scaled by ``rope``."""
    original = rope.original_max_position_embeddings or config.max_position_embeddings
    kept = {k: v for k, v in config.rope_parameters.items()
            if k in ("rope_theta", "partial_rotary_factor")}
    extra = rope.model_dump(exclude={"type", "max_position_embeddings",
                                     "original_max_position_embeddings"}, exclude_none=True)
    params = {**kept, **extra, "rope_type": rope.type}
    if rope.type in ("yarn", "llama3"):  # linear / dynamic take the factor alone
        params["original_max_position_embeddings"] = original
    return params, rope.max_position_embeddings or int(round(original * rope.factor))


def extended_base(start: str, target: Path, rope: RopeSpec) -> Path:
    """``start`` with its RoPE scaled, as a folder: links to its files, a new config.json."""
    if (target / "config.json").is_file():
        return target
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(start)
    config.rope_parameters, config.max_position_embeddings = rope_parameters(config, rope)
    try:
        config.validate_rope()
    except (KeyError, ValueError) as err:
        raise UserError(f"rope: {err}") from None
    source = Path(start) if Path(start).is_dir() else Path(_snapshot(start))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for file in source.iterdir():
            if file.is_file() and file.name != "config.json":
                os.symlink(file.resolve(), tmp / file.name)
        config.save_pretrained(tmp)
        checkpoints.rename_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id)


def train(link: Link) -> dict:
    """Train one cpt run on its prepared text; resumes; a no-op once complete."""
    from sftlab.train.config import config_from_study
    from sftlab.train.run import load_rows, train_on_rows

    rows = load_rows(link.data_path, fields=("text",))
    return train_on_rows(link.start, rows, config_from_study(link.study, link.run), link.root,
                         progress=link.progress, record=link.record)
