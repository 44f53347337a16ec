"""sftlab.train: the training machinery the method modules (:mod:`sftlab.methods`) share:
TRL + PEFT set up one way, a checkpoint per epoch, resumable.

Import cost is kept low: torch / transformers load when training starts.
"""

from sftlab.train.config import TrainConfig, config_from_study
from sftlab.train.run import checkpoint_dir, completed_epochs, load_rows, train_on_rows, train_run

__all__ = [
    "TrainConfig", "checkpoint_dir", "completed_epochs", "config_from_study", "load_rows",
    "train_on_rows", "train_run",
]
