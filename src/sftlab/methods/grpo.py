"""``type: grpo``: RL with verifiable rewards on TRL's ``GRPOTrainer`` (GRPO, DAPO, Dr.GRPO, ...).

Each optimizer step takes ``batch_size`` prompts and samples ``num_generations``
completions for each (``batch_size x num_generations`` completions per step, split
into micro-batches of ``micro_batch_size`` completions); the rewards
(:mod:`sftlab.methods.rewards`, ``rewards: {name: weight}``) are summed with their
weights and turned into group-relative advantages (``scale_rewards``). ``loss_type``
(``grpo``, ``bnpo``, ``dr_grpo``, ``dapo`` and TRL's others) is passed to TRL as it
is, like ``beta``, ``epsilon`` / ``epsilon_high``, ``temperature`` and
``max_completion_length``; the defaults are TRL 1.16's. Generation is HF ``generate``,
or vLLM with ``use_vllm`` (``vllm_mode: colocate | server`` and the placement keys, TRL's
names; CUDA and ``vllm`` are checked before training starts).

Data: the method's own ``data:`` holds prompts with gold answers: JSON lines / CSV /
parquet with ``prompt`` and ``answer`` columns (the default ``fields``), or a ``fields``
mapping (GSM8K: ``{instruction: question, response: answer}``); the prompt is rendered
with the study's template like an SFT prompt. It starts from a base model or from
another link (``init:``). Its length is ``steps`` optimizer steps (a checkpoint every
``save_steps``, default only the last, at ``ckpt/<run_id>/step-<n>/``) or ``epochs``
passes over the prompts (``ceil(prompts / batch_size)`` steps each, the prompts
reshuffled every epoch; a checkpoint at ``ckpt/<run_id>/epoch-<n>/`` after each, evaluated
like an SFT epoch; the plan needs no row count). TRL's sampler drops an epoch's last
incomplete batch, so when ``batch_size`` does not divide the prompts the first ones are
repeated to fill it (:func:`pad_to_batches`). A killed run resumes from its newest
checkpoint (optimizer, scheduler, RNG state). ``answer_marker`` (``"####"``, ``"The
answer is"``): both rewards also read a final answer after it (:mod:`rewards`).

``ckpt/<run_id>/rl_log.jsonl``: for every optimizer step, one row per response (of the
main process): ``step``, ``prompt`` (index within the step), ``response`` (index within
its group), ``length`` (completion tokens), ``reward`` (weighted sum), ``advantage``,
``weight`` (its ``m_i`` under the configured loss) and ``weights`` (``{loss_type: m_i}``
for grpo, bnpo, dr_grpo, dapo on the same micro-batches), measured by autograd through
TRL's loss code (:mod:`sftlab.methods.aggregation`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sftlab.errors import UserError
from sftlab.methods import rewards as reward_fns
from sftlab.methods.links import Link
from sftlab.study.spec import GENERIC_FORMATS, TrainedMethod, _unknown
from sftlab.train import checkpoints

log = logging.getLogger(__name__)

#: TRL 1.16's loss types (``GRPOConfig.loss_type``).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
DEFAULT_FIELDS = {"instruction": "prompt", "response": "answer"}
LOG_NAME = "train_log.jsonl"
RL_LOG = "rl_log.jsonl"  # one row per response per optimizer step (sftlab.methods.aggregation)


class GRPOMethod(TrainedMethod):
    """GRPO-family RL on prompts with gold answers; full weights or a LoRA / DoRA adapter."""

    type: Literal["grpo"]
    adapter: Literal["full", "lora", "dora"] = "full"
    # exactly one of `steps` (optimizer steps; step-<n> checkpoints) and `epochs` (passes
    # over the prompts, ceil(prompts / batch_size) steps each; epoch-<n> checkpoints)
    steps: int | None = Field(None, gt=0)
    epochs: int | None = Field(None, gt=0, le=10_000)
    save_steps: int | None = Field(None, gt=0)  # checkpoint every n steps (default: the last)
    batch_size: int = Field(gt=0)  # prompts per optimizer step
    num_generations: int = Field(8, ge=2)
    max_completion_length: int = Field(512, gt=0)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)  # KL coefficient; 0: no reference model
    epsilon: float = Field(0.2, gt=0)
    epsilon_high: float | None = Field(None, gt=0)  # DAPO's clip-higher; default: epsilon
    scale_rewards: Literal["group", "batch", "none"] = "group"
    loss_type: str = "dapo"
    rewards: dict[str, float] = Field(default_factory=lambda: {"math_verify": 1.0})
    reward_timeout: float = Field(5.0, gt=0)  # seconds per Math-Verify check
    # the study's answer marker ("####", "The answer is"): rewards read the answer after it
    answer_marker: str | None = Field(None, min_length=1)
    # generation by vLLM (TRL's GRPOConfig keys, same names); needs CUDA and `vllm`
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None  # server mode (default: TRL's 0.0.0.0:8000)
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)  # colocate mode
    vllm_tensor_parallel_size: int = Field(1, gt=0)  # colocate mode

    #: Where and how vLLM runs changes no result; whether it generates does (its sampler,
    #: and TRL's importance-sampling correction of the loss), so ``use_vllm`` is in the id.
    VLLM_PLACEMENT: ClassVar[tuple[str, ...]] = (
        "vllm_mode", "vllm_server_base_url", "vllm_gpu_memory_utilization",
        "vllm_tensor_parallel_size")
    EXECUTION_ONLY = (*TrainedMethod.EXECUTION_ONLY, "reward_timeout", *VLLM_PLACEMENT)
    UNIT = "step"

    @model_validator(mode="before")
    @classmethod
    def _default_fields(cls, raw: Any) -> Any:
        """A generic-format ``data:`` without ``fields`` reads ``prompt`` / ``answer``."""
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
            data = raw["data"]
            if data.get("format") in GENERIC_FORMATS and data.get("fields") is None:
                return {**raw, "data": {**data, "fields": DEFAULT_FIELDS}}
        return raw

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        if value not in LOSS_TYPES:
            raise ValueError(_unknown("loss type", value, LOSS_TYPES))
        return value

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k in value if k not in reward_fns.REWARDS]
        if bad:
            raise ValueError("; ".join(_unknown("reward", k, reward_fns.REWARDS) for k in bad))
        if not value:
            raise ValueError("at least one reward is needed (math_verify, format)")
        return value

    @model_validator(mode="after")
    def _checks(self) -> GRPOMethod:
        if self.data is None:
            raise ValueError("`data`: a grpo method needs prompts with gold answers "
                             "(data: {format: jsonl, path: ..., fields: ...})")
        if self.data.format == "text":
            raise ValueError("`data.format`: grpo reads prompts with answers, not raw text")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("`steps` / `epochs`: give exactly one, `steps` (optimizer steps) "
                             "or `epochs` (passes over the prompts of `data`)")
        if self.save_steps is not None and self.epochs is not None:
            raise ValueError("`save_steps`: with `epochs` a checkpoint ends every epoch; "
                             "`save_steps` goes with `steps`")
        if self.save_steps is not None and self.save_steps > self.steps:
            raise ValueError(f"`save_steps` {self.save_steps} is more than `steps` {self.steps}")
        if not self.use_vllm:
            given = [k for k in self.VLLM_PLACEMENT
                     if getattr(self, k) != type(self).model_fields[k].default]
            if given:
                raise ValueError(f"`{given[0]}` is set but `use_vllm` is false")
        elif self.vllm_server_base_url is not None and self.vllm_mode != "server":
            raise ValueError("`vllm_server_base_url` is for `vllm_mode: server`")
        return self

    def identity(self) -> dict:
        data = super().identity()
        if self.steps is not None:
            data["epochs"] = 1  # run ids of studies from before `epochs` counted stay the same
        for key, default in (("answer_marker", None), ("use_vllm", False)):
            if data[key] == default:
                data.pop(key)  # likewise for those from before these keys
        return data

    @property
    def unit(self) -> str:
        return "step" if self.steps is not None else "epoch"

    @property
    def weights(self) -> str:
        return self.adapter

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.num_generations

    def checkpoints(self) -> list[int]:
        if self.epochs is not None:
            return list(range(1, self.epochs + 1))
        every = self.save_steps or self.steps
        return sorted({*range(every, self.steps + 1, every), self.steps})

    def smoke(self, *, epochs: int, batch_size: int) -> dict:
        """Two steps (or at most ``epochs`` epochs) of two prompts, two completions of at
        most 16 tokens each, HF generation."""
        length = ({"steps": min(self.steps, 2), "save_steps": None} if self.steps is not None
                  else {"epochs": min(self.epochs, epochs)})
        return {**self.model_dump(exclude=set(self.VLLM_PLACEMENT)), **length, "use_vllm": False,
                "batch_size": min(self.batch_size, 2), "num_generations": 2,
                "max_completion_length": min(self.max_completion_length, 16),
                "micro_batch_size": None}


CONFIG = GRPOMethod


def grpo_config(cfg, staging, *, world_size: int, progress: bool, precision: str):
    """TRL ``GRPOConfig``: the shared hyperparameters plus the RL ones."""
    from trl import GRPOConfig

    from sftlab.train.arguments import training_arguments

    method = cfg.method
    by_steps = method.steps is not None
    length = ({"max_steps": method.steps, "save_steps": method.save_steps or method.steps,
               "num_train_epochs": 1}  # transformers ignores it when max_steps is set
              if by_steps else {"num_train_epochs": method.epochs})
    return GRPOConfig(
        **{**training_arguments(cfg, staging, world_size=world_size, progress=progress,
                                precision=precision,
                                save_strategy="steps" if by_steps else "epoch"), **length},
        **vllm_arguments(method),
        num_generations=method.num_generations,
        max_completion_length=method.max_completion_length,
        temperature=method.temperature,
        beta=method.beta,
        epsilon=method.epsilon,
        epsilon_high=method.epsilon_high,
        scale_rewards=method.scale_rewards,
        loss_type=method.loss_type,
        reward_weights=list(method.rewards.values()),
        log_completions=False,
    )


def vllm_arguments(method: GRPOMethod) -> dict:
    """The ``GRPOConfig`` keys of vLLM generation (none when ``use_vllm`` is false)."""
    if not method.use_vllm:
        return {}
    keys = {"use_vllm": True, "vllm_mode": method.vllm_mode}
    if method.vllm_mode == "server":
        keys["vllm_server_base_url"] = method.vllm_server_base_url
    else:
        keys.update(vllm_gpu_memory_utilization=method.vllm_gpu_memory_utilization,
                    vllm_tensor_parallel_size=method.vllm_tensor_parallel_size)
    return keys


def check_vllm(method: GRPOMethod) -> None:
    """At train time: ``use_vllm`` needs CUDA and an importable ``vllm``; a clear error
    naming the key otherwise (before any model is loaded)."""
    import importlib.util

    import torch

    if not method.use_vllm:
        return
    if not torch.cuda.is_available():
        raise UserError("`use_vllm: true`: vLLM generation needs a CUDA GPU and none is "
                        "visible; set `use_vllm: false` for HF generation")
    if importlib.util.find_spec("vllm") is None:
        raise UserError("`use_vllm: true`: the `vllm` package is not importable "
                        "(pip install vllm), or set `use_vllm: false`")


def pad_to_batches(rows: list[dict], batch_size: int) -> list[dict]:
    """``rows`` and, when ``batch_size`` does not divide them, their first ones again up to
    the next multiple: TRL's sampler drops an epoch's incomplete last batch of prompts, so
    this is how an epoch covers every prompt in ``ceil(len(rows) / batch_size)`` steps
    (as PyTorch's ``DistributedSampler`` pads a dataset by repeating its start)."""
    short = -len(rows) % batch_size
    return rows + [rows[i % len(rows)] for i in range(short)]


def train(link: Link) -> dict:
    """Train one grpo run on its prepared prompts; resumes; a no-op once complete."""
    from sftlab.train.config import config_from_study
    from sftlab.train.run import load_rows

    rows = load_rows(link.data_path)
    return train_on_prompts(link.start, rows, config_from_study(link.study, link.run), link.root,
                            progress=link.progress, record=link.record)


def train_on_prompts(model_path: str, rows: list[dict], cfg, root, *, progress: bool = False,
                     record: dict | None = None, callbacks: list | None = None) -> dict:
    """GRPO on prepared ``rows`` (``prompt`` and ``completion`` = the gold answer) into
    ``root`` (``ckpt/<run_id>``): ``step-<n>`` (``epoch-<n>`` with ``epochs``) checkpoints,
    ``sftlab_done.json``."""
    from pathlib import Path

    root = Path(root)
    unit, final = cfg.method.unit, cfg.method.checkpoints()[-1]
    main = int(os.environ.get("RANK", "0")) == 0
    done = checkpoints.read_done(root)
    if done is not None and final in checkpoints.list_epochs(root, unit):
        return {**done, "skipped": True}
    check_vllm(cfg.method)
    if main:
        root.mkdir(parents=True, exist_ok=True)
        checkpoints.clean_partial(root)
    last, resume_from = checkpoints.resume_point(root, unit)
    if last >= final:  # killed between the last checkpoint and the done record
        summary = {f"{unit}s_done": checkpoints.list_epochs(root, unit),
                   f"resumed_from_{unit}": last}
    else:
        if 0 < last and resume_from is None:
            log.warning("%s: %s %d has no optimizer state; training from the start", root,
                        unit, last)
        summary = _train(model_path, rows, cfg, root, resume_from, progress, record or {},
                         callbacks or [])
        summary[f"resumed_from_{unit}"] = last if resume_from is not None else 0
    done_numbers = checkpoints.list_epochs(root, unit)
    summary["checkpoints"] = [str(checkpoints.epoch_dir(root, n, unit)) for n in done_numbers]
    return checkpoints.mark_done(root, summary, unit) if main else summary


def _train(model_path, rows, cfg, root, resume_from, progress, record, callbacks) -> dict:
    from datasets import Dataset

    from sftlab.train.callbacks import EpochCheckpointCallback, TrainLogCallback, truncate_log
    from sftlab.train.trainer import (
        load_model,
        load_tokenizer,
        peft_config,
        quiet_libraries,
        resolve_attention,
        resolve_precision,
    )

    precision = resolve_precision(cfg.training.precision)
    attention = resolve_attention(cfg.training.attn_implementation)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = grpo_config(cfg, root / checkpoints.STAGING, world_size=world, progress=progress,
                       precision=precision)
    extra = {} if cfg.method_type == "full" else {checkpoints.BASE_RECORD: {
        "base_model": str(model_path), "method_type": cfg.method_type, **record}}
    unit = cfg.method.unit
    saver = EpochCheckpointCallback(root, extra, unit=unit)
    logger = TrainLogCallback(root / LOG_NAME)
    truncate_log(root / LOG_NAME, _global_step(resume_from))
    truncate_log(root / RL_LOG, _global_step(resume_from))
    funcs = reward_fns.build(list(cfg.method.rewards), timeout=cfg.method.reward_timeout,
                             marker=cfg.method.answer_marker)
    epoch_rows = rows if cfg.method.epochs is None else pad_to_batches(rows, cfg.method.batch_size)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["completion"]}
                                 for r in epoch_rows])
    with quiet_libraries():
        tokenizer = load_tokenizer(model_path, cfg)
        tokenizer.padding_side = "left"
        model = load_model(model_path, cfg, precision, attention)
        trainer = _trainer_class()(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                                   processing_class=tokenizer, peft_config=peft_config(cfg),
                                   callbacks=[saver, logger, *callbacks])
        trainer.sftlab_rl_log = root / RL_LOG if int(os.environ.get("RANK", "0")) == 0 else None
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        seconds = time.perf_counter() - start
    shutil.rmtree(root / checkpoints.STAGING, ignore_errors=True)
    math = next((f for f in funcs if isinstance(f, reward_fns.MathVerifyReward)), None)
    return {
        f"{unit}s_done": checkpoints.list_epochs(root, unit),
        "final_loss": logger.rows[-1]["loss"] if logger.rows else None,
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "train_seconds": round(seconds, 3),
        "examples": len(rows),
        "reward_checks": math.checks if math else 0,
        "reward_failures": dict(math.failures) if math else {},
    }


def _trainer_class():
    """TRL's ``GRPOTrainer`` that also writes ``rl_log.jsonl`` (see the module docstring)."""
    import json

    import torch
    from trl import GRPOTrainer

    from sftlab.methods.aggregation import AGGREGATIONS, measured_weights

    class SftlabGRPOTrainer(GRPOTrainer):
        sftlab_rl_log = None
        _sftlab_rewards: list[float] = []
        _sftlab_generation: dict | None = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            weights = self.reward_weights.to(per_func.device).unsqueeze(0)
            self._sftlab_rewards = (per_func * weights).nansum(dim=1).tolist()
            return per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            n = out["completion_mask"].shape[0]
            first = self.accelerator.process_index * n
            out["sftlab_index"] = torch.arange(n)
            self._sftlab_generation = {
                "lengths": out["completion_mask"].sum(-1).tolist(),
                "rewards": self._sftlab_rewards[first:first + n],
                "advantages": out["advantages"].reshape(n, -1)[:, 0].tolist(),
                "step": self.state.global_step + 1, "micro": []}
            return out

        def _compute_loss(self, model, inputs):
            gen = self._sftlab_generation
            if (self.sftlab_rl_log is not None and gen is not None and self.model.training
                    and "sftlab_index" in inputs):
                gen["micro"].append((inputs["sftlab_index"].tolist(),
                                     inputs["completion_mask"].detach().cpu()))
                if len(gen["micro"]) == self.args.steps_per_generation:
                    self._sftlab_write(gen)
                    self._sftlab_generation = None  # later iterations reuse the same batch
            return super()._compute_loss(model, inputs)

        def _sftlab_write(self, gen: dict) -> None:
            masks = [m for _, m in gen["micro"]]
            measured = {t: measured_weights(self, masks, t)
                        for t in dict.fromkeys((*AGGREGATIONS, self.loss_type))}
            g = self.num_generations
            with open(self.sftlab_rl_log, "a", encoding="utf-8") as fh:
                for k, (indices, _) in enumerate(gen["micro"]):
                    for j, i in enumerate(indices):
                        fh.write(json.dumps({
                            "step": gen["step"], "prompt": i // g, "response": i % g,
                            "length": int(gen["lengths"][i]), "reward": gen["rewards"][i],
                            "advantage": gen["advantages"][i],
                            "weight": measured[self.loss_type][k][j],
                            "weights": {t: measured[t][k][j] for t in AGGREGATIONS}}) + "\n")

    return SftlabGRPOTrainer


def _global_step(checkpoint) -> int:
    import json

    if checkpoint is None:
        return 0
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
