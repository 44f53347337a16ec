"""Trainer callbacks: per-epoch checkpoints in place, and the training log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from sftlab import atomic, jsonio
from sftlab.train import checkpoints


class EpochCheckpointCallback(TrainerCallback):
    """After transformers saves a checkpoint, move it into place as ``epoch-<n>``
    (``unit="step"``: ``step-<global step>``)."""

    def __init__(self, root: Path, extra_files: dict[str, dict], unit: str = "epoch"):
        self.root = root
        self.extra_files = extra_files
        self.unit = unit
        self.saved: list[Path] = []

    def on_save(self, args, state, control, **kwargs):
        staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        epoch = round(state.epoch) if self.unit == "epoch" else state.global_step
        _barrier()  # every process has written its RNG state into the staged folder
        if state.is_world_process_zero:
            extra = {**self.extra_files, "sftlab_epoch.json": {
                "epoch": epoch, "global_step": state.global_step}}
            self.saved.append(checkpoints.promote(staged, self.root, epoch, extra, self.unit))
        _barrier()
        return control


class TrainLogCallback(TrainerCallback):
    """Append one JSON row per logging step to ``train_log.jsonl`` (main process only).

    ``tokens_per_second`` counts non-padding tokens (prompt and response) since the
    previous row, from TRL's ``num_tokens`` metric. Every epoch also ends with a row
    (unless its last step was just logged), so a short run still logs its loss.
    Each process must have this callback: logging averages the loss across processes.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self._last_time = time.perf_counter()
        self._last_tokens = 0.0
        self.first_time: float | None = None
        self.total_tokens = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = self.first_time = time.perf_counter()
        self._last_tokens = 0.0
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return control
        if "num_tokens" in logs:
            self.total_tokens = float(logs["num_tokens"])
        if "loss" not in logs:
            return control
        now = time.perf_counter()
        tokens = float(logs.get("num_tokens", 0.0))
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_tokens = now, tokens
        row = {
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0.0), 4),
            "loss": float(logs["loss"]),
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "grad_norm": _maybe_float(logs.get("grad_norm")),
            "tokens_per_second": round(rate, 2),
            "num_tokens": tokens,
        }
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        return control


class LossProgressCallback(ProgressCallback):
    """transformers' tqdm bar (steps, elapsed, ETA) showing the loss instead of printing logs."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.update(state.global_step)  # a resumed run starts part-way
            self.current_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=f"{state.epoch:.2f}")


def truncate_log(path: Path, max_step: int) -> None:
    """Drop log rows past ``max_step`` (steps redone after a resume), atomically."""
    if not path.is_file():
        return
    rows = []
    for line in jsonio.lines(path.read_text(encoding="utf-8")):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if row.get("step", 0) <= max_step:
            rows.append(line)
    atomic.write_text(path, "".join(r + "\n" for r in rows))


def _maybe_float(value) -> float | None:
    return None if value is None else float(value)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
