"""``type: full | lora | dora``: supervised fine-tuning on prompt/completion rows (TRL ``SFTTrainer``).

The loss is on the completion only; ``lora`` / ``dora`` train a PEFT adapter
(``methods.<name>.lora``), ``full`` every weight. See :mod:`sftlab.train.trainer`.
"""

from __future__ import annotations

from typing import Literal

from sftlab.methods.links import Link
from sftlab.study.spec import TrainedMethod


class SFTMethod(TrainedMethod):
    """Supervised fine-tuning: full weights, a LoRA adapter or a DoRA adapter."""

    type: Literal["full", "lora", "dora"]

    @property
    def weights(self) -> str:
        return self.type

    def sft_arguments(self, max_length: int | None, padding_free: bool) -> dict:
        """SFTConfig keys of this objective: completion-only loss on unpacked examples."""
        return {"completion_only_loss": True, "packing": False, "padding_free": padding_free,
                "max_length": None if padding_free else max_length}


CONFIG = SFTMethod


def train(link: Link) -> dict:
    """Train one SFT run on its prepared set; resumes; a no-op once complete."""
    from sftlab.train.config import config_from_study
    from sftlab.train.run import load_rows, train_on_rows

    rows = load_rows(link.data_path)
    return train_on_rows(link.start, rows, config_from_study(link.study, link.run), link.root,
                         progress=link.progress, record=link.record)
