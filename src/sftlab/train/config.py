"""What one training run needs to know: its method's config and the study's training settings.

``TrainConfig`` holds the method's typed config (a ``methods.<name>`` value of the
study: :class:`~sftlab.methods.sft.SFTMethod`, ``CPTMethod``, ...) and the study's
:class:`~sftlab.study.spec.TrainingSpec` as they are; every default lives in those
pydantic models, and :mod:`sftlab.train.arguments` maps them onto TRL's config once.
:func:`config_from_study` fills it from a study and a planned run;
:meth:`TrainConfig.of` builds one from flat keys (tests, benchmarks, ``--rows`` specs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import UserError
from sftlab.study.spec import Study, TrainedMethod, TrainingSpec

#: Largest micro-batch chosen when the study does not set ``micro_batch_size``.
DEFAULT_MAX_MICRO_BATCH = 8


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes one training run (and a few execution details)."""

    method: TrainedMethod
    training: TrainingSpec = field(default_factory=TrainingSpec)
    seed: int = Study.model_fields["seed"].default
    max_length: int | None = None
    trust_remote_code: bool = False

    @classmethod
    def of(cls, method_type: str = "full", *, seed: int | None = None,
           max_length: int | None = None, trust_remote_code: bool = False,
           **keys: Any) -> TrainConfig:
        """A config from flat keys: method keys (``learning_rate``, ``lora``, ...) and
        training keys (``precision``, ``logging_steps``, ...), validated by their models."""
        from sftlab.methods import METHOD_CONFIGS

        if method_type not in METHOD_CONFIGS:
            raise UserError(f"unknown method type '{method_type}'")
        training = {k: keys.pop(k) for k in list(keys) if k in TrainingSpec.model_fields}
        method = METHOD_CONFIGS[method_type].model_validate({"type": method_type, **keys})
        extra = {"seed": seed} if seed is not None else {}
        return cls(method=method, training=TrainingSpec.model_validate(training),
                   max_length=max_length, trust_remote_code=trust_remote_code, **extra)

    @property
    def method_type(self) -> str:
        """What the trained weights are: ``full``, ``lora`` or ``dora`` (the model loader's view)."""
        return self.method.weights

    @property
    def epochs(self) -> int:
        return self.method.epochs

    def micro_and_accumulation(self, world_size: int = 1) -> tuple[int, int]:
        """(micro-batch per process, gradient accumulation steps) meeting ``batch_size``.

        ``batch_size == micro * accumulation * world_size`` exactly; a study that
        asks for a split that does not divide gets a clear error.
        """
        batch, micro = self.method.examples_per_step, self.method.micro_batch_size
        if batch % world_size:
            raise UserError(f"batch_size {batch} is not divisible by the {world_size} processes")
        per_rank = batch // world_size
        micro = micro or _largest_divisor_at_most(per_rank, DEFAULT_MAX_MICRO_BATCH)
        if per_rank % micro:
            raise UserError(
                f"micro_batch_size {micro} does not divide the per-process batch {per_rank} "
                f"(batch_size {batch} over {world_size} process(es))")
        return micro, per_rank // micro


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def config_from_study(study: Study, run) -> TrainConfig:
    """The TrainConfig of planned ``run`` in ``study`` (a ``Study`` and a ``RunSpec``)."""
    model = next(m for m in study.models if m.name == run.model)
    return TrainConfig(method=study.methods[run.method], training=study.training,
                       seed=study.seed, max_length=study.max_length,
                       trust_remote_code=model.trust_remote_code)
