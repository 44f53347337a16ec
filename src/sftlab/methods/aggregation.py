"""How each GRPO loss type weighs each response, measured on TRL's own loss code.

With per-token weights ``w_{i,t}`` (the loss is ``sum_{i,t} w_{i,t} l_{i,t}`` over one
optimizer step), a response's weight is ``m_i = sum_t w_{i,t}``. :func:`measured_weights`
gets it by autograd: it runs TRL's ``GRPOTrainer._compute_loss`` on the step's
micro-batches with the per-token log-probabilities as leaf tensors, old = current
(ratio 1, inside the clip range) and every advantage -1, so each per-token loss is the
ratio and the gradient of the step's loss at token ``t`` of response ``i`` is ``w_{i,t}``.

:func:`closed_form` is what that code computes (TRL 1.16, one process, ``K`` micro-batches
per optimizer step, ``N`` responses, ``L_i`` the completion tokens of response ``i``,
``T_k`` those of its micro-batch, ``T`` those of the step):

- ``grpo``: ``1 / (B_k K)``: each micro-batch's mean of per-response means, over ``K``
  (the mean is over the micro-batch, not the group);
- ``bnpo``: ``L_i / (T_k K)``: tokens of the micro-batch;
- ``dr_grpo``: ``L_i / (B_k K max_completion_length)``;
- ``dapo``: ``L_i / T``: tokens of the whole generation batch (all processes).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

#: The loss types whose weights are measured and logged.
AGGREGATIONS = ("grpo", "bnpo", "dr_grpo", "dapo")


def closed_form(lengths: list[list[int]], loss_type: str, max_completion_length: int) -> list[list[float]]:
    """``m_i`` for micro-batches of completion lengths (one optimizer step), by formula."""
    k = len(lengths)
    total = sum(map(sum, lengths))
    out = []
    for micro in lengths:
        b, tokens = len(micro), sum(micro)
        out.append([{"grpo": 1 / (b * k), "bnpo": n / (max(tokens, 1) * k),
                     "dr_grpo": n / (b * k * max_completion_length),
                     "dapo": n / max(total, 1)}[loss_type] for n in micro])
    return out


@contextmanager
def _measuring(trainer, loss_type: str, accumulation: int):
    """The trainer set up for a pure measurement of ``loss_type``'s aggregation."""
    names = ("loss_type", "beta", "top_entropy_quantile", "off_policy_mask_threshold",
             "use_vllm", "aux_loss_enabled", "_entropy_bonus_enabled", "_metrics",
             "current_gradient_accumulation_steps", "importance_sampling_level")
    saved = {n: getattr(trainer, n) for n in names if hasattr(trainer, n)}
    saved_delta = trainer.args.delta
    training = trainer.model.training
    try:
        trainer.loss_type, trainer.beta, trainer.top_entropy_quantile = loss_type, 0.0, 1.0
        trainer.off_policy_mask_threshold, trainer.use_vllm, trainer.aux_loss_enabled = None, False, False
        trainer._entropy_bonus_enabled = False
        trainer.importance_sampling_level = "token"
        trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        trainer.current_gradient_accumulation_steps = accumulation
        trainer.args.delta = None
        trainer.model.train()
        yield
    finally:
        for n, v in saved.items():
            setattr(trainer, n, v)
        trainer.args.delta = saved_delta
        trainer.model.train(training)


def measured_weights(trainer, masks: list, loss_type: str) -> list[list[float]]:
    """``m_i`` of each response in ``masks`` (the completion masks of one optimizer step's
    micro-batches, in order) under ``loss_type``, by autograd through TRL's loss code."""
    import torch
    from trl import GRPOTrainer

    total = sum(float(m.sum()) for m in masks)
    out = []
    with _measuring(trainer, loss_type, len(masks)):
        for mask in masks:
            mask = mask.float()
            logps = torch.zeros(mask.shape, requires_grad=True)

            def per_token(*args, _logps=logps, **kwargs):
                return _logps, torch.zeros_like(_logps), None

            trainer._get_per_token_logps_and_entropies = per_token
            try:
                inputs = {"prompt_ids": torch.zeros((mask.shape[0], 1), dtype=torch.long),
                          "prompt_mask": torch.ones((mask.shape[0], 1), dtype=torch.long),
                          "completion_ids": torch.zeros(mask.shape, dtype=torch.long),
                          "completion_mask": mask.long(),
                          "advantages": -torch.ones(mask.shape[0]),
                          "num_items_in_batch": torch.tensor(total)}
                loss = GRPOTrainer._compute_loss(trainer, None, inputs)
                (grad,) = torch.autograd.grad(loss, logps)
            finally:
                del trainer._get_per_token_logps_and_entropies  # back to the class's method
            out.append((grad * mask).sum(-1).tolist())
    return out
