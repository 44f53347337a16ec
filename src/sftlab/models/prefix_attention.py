"""Attention over one prefix that every row of a batch shares, its keys read once per step.

When the n samples of one prompt (or rows with one few-shot block) decode together, a
plain KV cache holds the prefix n times: each decoding step reads, and each step's
``torch.cat`` copies, n copies of the same keys and values. Here the prefix's keys and
values are kept once (batch 1) and the cache holds only each row's own tokens. Each
attention call then scores every row's queries against the prefix in one matrix
product (the rows' queries stacked as one long query block, so the prefix is read once),
scores them against the row's own keys as usual (its padding and causality masked), and
takes one softmax over both parts: the same attention as over the concatenated keys.

Transformers calls :func:`prefix_attention` by name (``attn_implementation``) and passes
model-call keyword arguments down to it: within :func:`shared_prefix_attention`,
``model(..., shared_prefix=[(keys, values) per layer])`` uses it; without the keyword
it is plain SDPA. The causal masks come from transformers' own ``sdpa_mask``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

NAME = "sftlab_shared_prefix"
SUPPORTED = ("sdpa", "eager")  # implementations this one may stand in for


def prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0,
                     scaling: float | None = None,
                     shared_prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``query`` [B, H, q, d]; ``key``/``value`` [B, Hkv, S, d] (the rows' own tokens);
    ``shared_prefix[layer]`` = keys and values [1, Hkv, P, d] of the shared prefix.
    Returns [B, q, H, d] like transformers' SDPA function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    prefix_k, prefix_v = shared_prefix[module.layer_idx]
    b, heads, q, d = query.shape
    kv_heads, p, s = prefix_k.shape[1], prefix_k.shape[2], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else d ** -0.5
    # [B, Hkv, g, q, d]: query heads grouped under the key head they read (GQA)
    grouped = query.view(b, kv_heads, groups, q, d)
    stacked = grouped.permute(1, 0, 2, 3, 4).reshape(kv_heads, b * groups * q, d)
    on_prefix = torch.matmul(stacked, prefix_k[0].transpose(-1, -2)) * scale
    on_prefix = on_prefix.view(kv_heads, b, groups, q, p).permute(1, 0, 2, 3, 4)
    on_own = torch.matmul(grouped.reshape(b, kv_heads, groups * q, d),
                          key.transpose(-1, -2)) * scale
    on_own = on_own.view(b, kv_heads, groups, q, s)
    allowed = _own_mask(attention_mask, b, q, s, query.device)
    if allowed is not None:
        on_own = on_own.masked_fill(~allowed[:, :, None], float("-inf"))
    weights = torch.softmax(torch.cat([on_prefix, on_own], dim=-1).float(), dim=-1)
    weights = weights.to(value.dtype)
    w_prefix = weights[..., :p].permute(1, 0, 2, 3, 4).reshape(kv_heads, b * groups * q, p)
    out = torch.matmul(w_prefix, prefix_v[0]).view(kv_heads, b, groups, q, d)
    out = out.permute(1, 0, 2, 3, 4)
    out = out + torch.matmul(weights[..., p:].reshape(b, kv_heads, groups * q, s),
                             value).view(b, kv_heads, groups, q, d)
    return out.reshape(b, heads, q, d).transpose(1, 2).contiguous(), None


def _own_mask(mask: torch.Tensor | None, b: int, q: int, s: int,
              device: torch.device) -> torch.Tensor | None:
    """[B, 1, q, S] boolean (True: may attend) over the rows' own keys, or None."""
    if mask is None:  # sdpa_mask left it out: causal with no padding
        if q == 1:
            return None
        causal = torch.ones(q, s, dtype=torch.bool, device=device).tril(s - q)
        return causal[None, None].expand(b, 1, q, s)
    return mask[..., -s:]  # sdpa_mask's boolean mask (registered for this attention)


def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, prefix_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def usable(model: Any) -> bool:
    """Whether ``model`` runs an attention this module can stand in for: SDPA or eager,
    every layer full causal attention (no sliding window, which could hide the prefix)."""
    config = model.config
    if getattr(config, "_attn_implementation", None) not in SUPPORTED:
        return False
    layer_types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return False
    return not (getattr(config, "sliding_window", None) and
                getattr(config, "use_sliding_window", True) and not layer_types)


@contextmanager
def shared_prefix_attention(model: Any) -> Iterator[None]:
    """Within: ``model`` runs :func:`prefix_attention` (plain SDPA unless a call passes
    ``shared_prefix``); its own implementation is restored after."""
    _register()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
