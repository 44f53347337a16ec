"""The one mapping from sftlab's hyperparameters onto transformers' ``TrainingArguments``.

Every trainer sftlab builds (TRL's ``SFTConfig`` today, ``GRPOConfig`` for RL) is a
``TrainingArguments`` subclass; :func:`training_arguments` gives the keys they share,
so a method module adds only what is its own (loss, packing, generation).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sftlab.train.config import TrainConfig


def training_arguments(cfg: TrainConfig, staging: Path, *, world_size: int, progress: bool,
                       precision: str, save_strategy: str = "epoch") -> dict:
    """``TrainingArguments`` keys for one run (checkpoints staged in ``staging``)."""
    method, training = cfg.method, cfg.training
    micro, accumulation = cfg.micro_and_accumulation(world_size)
    return dict(
        output_dir=str(staging),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        learning_rate=method.learning_rate,
        weight_decay=method.weight_decay,
        num_train_epochs=method.epochs,
        lr_scheduler_type=method.lr_scheduler,
        warmup_steps=method.warmup_ratio,
        max_grad_norm=method.max_grad_norm,
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=method.gradient_checkpointing,
        logging_steps=training.logging_steps,
        save_strategy=save_strategy,
        save_only_model=False,
        report_to=list(training.report_to) or "none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_backend="gloo" if world_size > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,  # a causal LM uses every trainable parameter
        fsdp=training.fsdp,
        deepspeed=training.deepspeed,
    )
