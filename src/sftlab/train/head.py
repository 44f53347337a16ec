"""The training loss's output head on CPU: projected at labelled positions only.

TRL's ``SFTTrainer`` patches the model with a fused LM head
(``trl.trainer.utils.add_fused_lm_head``): ``model(..., fused_lm_head=True)`` returns
per-token log-probabilities, entropies and top-1 hits instead of logits. With Triton
(CUDA, XPU) it projects only the positions that have a label, in fused tiles. Elsewhere
it projects every position, prompt and padding included, folds each vocabulary tile
in a chain of torch operations and recomputes the tiles in the backward pass. On
SmolLM2-135M-Instruct (49,152-token vocabulary, 2 CPU cores) that head was 44% of a
training step: 5.8 of 13.2 s for 8 rows of 110 tokens, of which 564 had a label.

:func:`add_labelled_head` wraps TRL's patched forward where TRL would score every
position: the backbone runs as before, then the head runs on the labelled positions
only, as one matrix product and a log-softmax per tile of :data:`TILE_ELEMENTS`
logits (later tiles are recomputed in the backward pass, so memory stays bounded).
The outputs are TRL's :class:`FusedCausalLMOutput`, so TRL's loss (``nll``, ``dft``)
and its metrics (entropy, mean token accuracy) read them unchanged. It is used only
where :func:`sftlab.models.runtime.plain_head` finds that ``head(decoder(x))`` is the
model's logits (no logit scaling or soft-capping) and the model has no router loss;
otherwise TRL's head stays.
"""

from __future__ import annotations

import functools
import logging
import types
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Logits computed at once (512 MiB in fp32); more labelled tokens than this holds are
#: projected tile by tile, each tile recomputed in the backward pass.
TILE_ELEMENTS = 2**27


def add_labelled_head(model: Any) -> bool:
    """Wrap ``model``'s TRL fused-head forward (see the module docstring) where TRL would
    project every position. Returns whether it was installed."""
    head = model.get_output_embeddings()
    if head is None or head.weight.device.type in ("cuda", "xpu"):
        return False  # TRL's Triton kernel projects labelled positions only
    if getattr(model.config.get_text_config(), "output_router_logits", False):
        return False
    probe = torch.arange(min(8, head.weight.shape[0]), device=head.weight.device)[None]
    from sftlab.models.runtime import plain_head

    if not plain_head(model, probe):
        log.info("training loss: the model transforms its logits after the head; TRL's head kept")
        return False
    from trl.trainer.utils import FusedCausalLMOutput

    fused_forward = model.forward  # TRL's patched forward (its non-fused branch is the model's)

    @functools.wraps(type(model).forward)  # generate validates its kwargs against the signature
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None,
                num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            return fused_forward(*args, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.get_decoder()(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, targets = hidden[:, :-1], labels[:, 1:]
        else:
            targets = shift_labels
        mask = targets != -100
        per_token = labelled_logprobs(hidden[mask], self.get_output_embeddings(), targets[mask])
        # masked_scatter keeps the loss connected to the model when no position has a label
        log_probs, entropy, is_top1 = (x.new_zeros(mask.shape).masked_scatter(mask, x)
                                       for x in per_token)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs,
                                   entropy=entropy, is_top1=is_top1, label_mask=mask)

    model.forward = types.MethodType(forward, model)
    model.sftlab_labelled_head = True
    log.info("training loss: output head at labelled positions only")
    return True


def labelled_logprobs(hidden: torch.Tensor, head: Any, targets: torch.Tensor):
    """(log-probability of each target, entropy, whether the target is the argmax) for
    hidden states ``[N, H]`` through ``head``; only the log-probabilities carry gradients."""
    per_tile = max(1, TILE_ELEMENTS // head.weight.shape[0])
    if hidden.shape[0] <= per_tile:
        return _tile(hidden, head, targets)
    from torch.utils.checkpoint import checkpoint

    parts = [checkpoint(_tile, hidden[i:i + per_tile], head, targets[i:i + per_tile],
                        use_reentrant=False)
             for i in range(0, hidden.shape[0], per_tile)]
    return tuple(torch.cat(xs) for xs in zip(*parts, strict=True))


def _tile(hidden: torch.Tensor, head: Any, targets: torch.Tensor):
    logits = head(hidden).float()
    logp = logits.log_softmax(-1)
    log_probs = logp.gather(-1, targets[:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
        is_top1 = logits.argmax(-1) == targets
    return log_probs, entropy, is_top1
