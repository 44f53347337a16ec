"""TRL ``SFTTrainer`` + PEFT, set up the way every sftlab run is trained.

What sftlab adds to TRL is small: the :class:`~sftlab.train.batching.StepBatchSampler`
(length-grouped optimizer steps whose content does not depend on the
micro-batch split), the output head at labelled positions only on CPU
(:mod:`sftlab.train.head`) and the mapping from a :class:`TrainConfig` to ``SFTConfig`` /
``LoraConfig``. Loss: TRL's completion-only loss on pre-tokenised prompt-completion data
(:mod:`sftlab.train.data`: the rendered prompt is masked, EOS ends each response),
normalised by the number of response tokens in the whole optimizer step across
micro-batches and processes (transformers' ``num_items_in_batch``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer

from sftlab.errors import UserError
from sftlab.study.spec import LoraSpec
from sftlab.train import checkpoints
from sftlab.train.arguments import training_arguments
from sftlab.train.batching import StepBatchSampler
from sftlab.train.callbacks import LossProgressCallback
from sftlab.train.config import TrainConfig
from sftlab.train.data import to_dataset
from sftlab.train.head import add_labelled_head

log = logging.getLogger(__name__)


class SftlabSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose training batches come from :class:`StepBatchSampler`."""

    sftlab_group_by_length: bool = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        add_labelled_head(model)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(ids) for ids in dataset["input_ids"]]
        args = self.args
        world = max(1, args.world_size)
        return StepBatchSampler(
            lengths,
            batch_size=args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
            micro_batch_size=args.per_device_train_batch_size,
            world_size=world,
            rank=args.process_index if world > 1 else 0,
            seed=args.seed,
            group_by_length=self.sftlab_group_by_length,
        )


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a GPU that has it, else ``fp32``."""
    if precision != "auto":
        if precision in ("bf16", "fp16") and not torch.cuda.is_available():
            raise UserError(f"training.precision: {precision} needs a GPU; use fp32 or auto on CPU")
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_attention(requested: str | None) -> str | None:
    """The attention kernel: the study's choice, else flash-attention 2 when installed on GPU."""
    if requested:
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None  # transformers' default (sdpa)


def load_model(model_path: str, cfg: TrainConfig, precision: str, attention: str | None):
    """The base model: fp32 weights for full runs (mixed precision), bf16 bases for adapters."""
    from sftlab.models.runtime import load_model as runtime_load_model

    dtype = "float32"
    if cfg.method_type != "full" and precision in ("bf16", "fp16"):
        dtype = "bfloat16" if precision == "bf16" else "float16"
    return runtime_load_model(model_path, device=None, dtype=dtype, attention=attention,
                              trust_remote_code=cfg.trust_remote_code)


def load_tokenizer(model_path: str, cfg: TrainConfig):
    from sftlab.models.runtime import load_tokenizer as runtime_load_tokenizer

    return runtime_load_tokenizer(model_path, trust_remote_code=cfg.trust_remote_code,
                                  require_eos=True)


def peft_config(cfg: TrainConfig):
    """PEFT ``LoraConfig`` for lora / dora runs (``use_dora``), else None."""
    if cfg.method_type == "full":
        return None
    from peft import LoraConfig

    lora = cfg.method.lora or LoraSpec()
    targets = lora.target_modules
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=cfg.method_type == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(cfg: TrainConfig, staging: Path, *, world_size: int, progress: bool,
               precision: str, padding_free: bool) -> SFTConfig:
    """TRL ``SFTConfig`` for one run (checkpoints staged in ``staging``): the shared
    hyperparameters plus the method's own objective (``sft_arguments``)."""
    return SFTConfig(
        **training_arguments(cfg, staging, world_size=world_size, progress=progress,
                             precision=precision),
        **cfg.method.sft_arguments(cfg.max_length, padding_free),
    )


def train_only_layers(model, layers: list[int]) -> None:
    """Freeze every parameter but those of decoder ``layers`` (``trainable: new``)."""
    keep = {id(p) for i in layers for p in model.model.layers[i].parameters()}
    for param in model.parameters():
        param.requires_grad_(id(param) in keep)
    log.info("training only layers %s (%d parameters)", layers,
             sum(p.numel() for p in model.parameters() if p.requires_grad))


def build_trainer(model_path: str, rows: list[dict], cfg: TrainConfig, staging: Path, *,
                  callbacks: list, progress: bool = True,
                  tensorboard_dir: Path | None = None) -> SftlabSFTTrainer:
    """A ready-to-train ``SftlabSFTTrainer`` for prompt/completion ``rows``.

    With ``report_to`` containing ``tensorboard``, events go to ``tensorboard_dir``
    (default: beside ``staging``), not into the staging folder that is thrown away.
    """
    precision = resolve_precision(cfg.training.precision)
    attention = resolve_attention(cfg.training.attn_implementation)
    padding_free = attention is not None and attention.startswith("flash_attention")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = sft_config(cfg, staging, world_size=world, progress=progress,
                      precision=precision, padding_free=padding_free)
    if "tensorboard" in cfg.training.report_to:
        args.report_to = [r for r in args.report_to if r != "tensorboard"]
        callbacks = [*callbacks, _tensorboard(tensorboard_dir or staging.parent / "tensorboard")]
    tokenizer = load_tokenizer(model_path, cfg)
    dataset = to_dataset(rows, tokenizer)
    model = load_model(model_path, cfg, precision, attention)
    if cfg.method.trainable == "new":
        train_only_layers(model, checkpoints.read_new_layers(model_path))
    trainer = SftlabSFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=peft_config(cfg), callbacks=callbacks)
    trainer.sftlab_group_by_length = cfg.training.group_by_length
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback if not progress else ProgressCallback)
    if progress:
        trainer.add_callback(LossProgressCallback())
    log.info("training %s (%s) on %d examples: precision %s, attention %s, %d x %d x %d",
             model_path, cfg.method_type, len(rows), precision, attention or "sdpa",
             args.per_device_train_batch_size, args.gradient_accumulation_steps, world)
    return trainer


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """While training: no progress bars of datasets' maps or of weight loading / saving
    (the training bar alone is shown), and no deprecation warnings that libraries raise
    about each other (TRL on transformers' ``is_gradient_checkpointing``)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_bars = datasets.is_progress_bar_enabled()
    hf_bars = hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* deprecated",
                                    category=FutureWarning)
            yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()


def _tensorboard(log_dir: Path):
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))
