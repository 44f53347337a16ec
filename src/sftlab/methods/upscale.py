"""``type: upscale`` and ``sftlab upscale``: depth up-scaling, a base model made deeper.

Three strategies, each a plan of where every layer of the deeper model comes from
(:func:`layer_plan`; ``L`` base layers, ``N`` wanted, ``n = N - L`` new):

- ``solar`` (SOLAR 10.7B): two copies of the base, the top ``m`` layers of the first
  and the bottom ``m`` of the second dropped, ``m = (2L - N) / 2``: 32 -> 48 is base
  0-23 then base 8-31. Not function-preserving; the second copy counts as new.
- ``llama_pro`` (LLaMA-Pro): after every ``L / n`` base layers, a copy of the last of
  them with ``o_proj`` and ``down_proj`` zeroed, so it is the identity at init.
- ``opt_deus`` (OpT-DeUS, arXiv 2508.08011): base ``0 .. L-n-1`` kept; before each base
  layer ``j`` of the top ``n`` a new layer fused from its neighbours ``j-1`` and ``j``
  (32 -> 48: new layers at 16, 18, ..., 46); ``o_proj`` / ``down_proj`` zeroed.
  Fusion, per weight matrix: the rows (output neurons) of the upper neighbour are
  aligned to the lower's by entropic optimal transport (Sinkhorn, ``reg`` 0.06 on the
  cost scaled to [0, 1], uniform marginals), and the two are averaged; vectors (norms,
  biases) are averaged. The released code multiplies by the coupling ``T`` itself,
  whose rows sum to ``1/n``, so its aligned matrix has about ``1/n`` of the neighbour's
  norm and the fused layer is roughly half the lower neighbour. sftlab rescales the
  coupling by ``n`` (rows summing to 1: a barycentric projection), so a fused matrix
  has the scale of its neighbours. ``o_proj`` / ``down_proj`` being zero, this choice
  does not change the model at init, only where training starts from.

Every per-layer field is rebuilt: ``num_hidden_layers``, ``layer_types`` (Qwen2-style
configs) and each attention module's ``layer_idx`` (a stale one makes two layers share
a KV-cache slot: wrong generations, no error). ``sftlab_upscale.json`` in the result
records the plan; a child link with ``trainable: new`` trains only the new layers.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sftlab.errors import UserError
from sftlab.methods.links import Link
from sftlab.study.spec import MethodBase
from sftlab.train import checkpoints

log = logging.getLogger(__name__)

STRATEGIES = ("solar", "llama_pro", "opt_deus")
ZEROED = ("self_attn.o_proj", "mlp.down_proj")  # the residual branches' output projections
SINKHORN_REG = 0.06


class UpscaleMethod(MethodBase):
    """Depth up-scaling to ``layers`` decoder layers with ``strategy``."""

    type: Literal["upscale"]
    strategy: Literal["solar", "llama_pro", "opt_deus"]
    layers: int = Field(gt=0)

    READS_DATA = False

    @model_validator(mode="after")
    def _no_data(self) -> UpscaleMethod:
        if self.data is not None:
            raise ValueError("`data`: an upscale link reads no data")
        return self

    def smoke(self, *, epochs: int, batch_size: int) -> dict:
        """``tiny:<arch>`` models have 2 layers: up-scaled to 3 (solar: 4, its smallest)."""
        return {**self.model_dump(), "layers": 4 if self.strategy == "solar" else 3}


CONFIG = UpscaleMethod


@dataclass(frozen=True)
class Source:
    """Where one layer of the deeper model comes from."""

    layers: tuple[int, ...]  # one base layer (a copy) or two (fused from neighbours)
    new: bool  # added by the up-scaling (trained by `trainable: new`)
    zeroed: bool = False  # o_proj / down_proj zeroed: the identity at init


def layer_plan(strategy: str, base_layers: int, layers: int) -> list[Source]:
    """Where each of the ``layers`` layers comes from (see the module docstring)."""
    L, N, n = base_layers, layers, layers - base_layers
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy '{strategy}' (expected one of: {', '.join(STRATEGIES)})")
    if n <= 0:
        raise UserError(f"--layers {N} must be more than the base model's {L} layers")
    if strategy == "solar":
        if N > 2 * L or (2 * L - N) % 2:
            raise UserError(f"solar: {L} -> {N} layers needs N <= 2L and 2L - N even")
        m = (2 * L - N) // 2
        return ([Source((i,), new=False) for i in range(L - m)]
                + [Source((i,), new=True) for i in range(m, L)])
    if strategy == "llama_pro":
        after = {round(k * L / n) - 1 for k in range(1, n + 1)}
        if len(after) < n:
            raise UserError(f"llama_pro: at most {L} new layers (one after each base layer)")
        out = []
        for i in range(L):
            out.append(Source((i,), new=False))
            if i in after:
                out.append(Source((i,), new=True, zeroed=True))
        return out
    if n >= L:
        raise UserError(f"opt_deus: at most {L - 1} new layers for a {L}-layer model")
    out = [Source((i,), new=False) for i in range(L - n)]
    for j in range(L - n, L):
        out += [Source((j - 1, j), new=True, zeroed=True), Source((j,), new=False)]
    return out


def upscale_model(model_path: str, strategy: str, layers: int, out_dir: Path | str, *,
                  trust_remote_code: bool = False) -> dict:
    """Write the up-scaled ``model_path`` (and its tokenizer) to ``out_dir``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto",
                                                 trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    base = model.model.layers
    plan = layer_plan(strategy, len(base), layers)
    with torch.no_grad():
        new_layers = torch.nn.ModuleList(_build_layer(base, s) for s in plan)
    for index, layer in enumerate(new_layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    model.model.layers = new_layers
    _rebuild_config(model.config, plan)
    record = {"strategy": strategy, "base_model": model_path, "base_layers": len(base),
              "layers": layers, "sources": [asdict(s) for s in plan],
              "new_layers": [i for i, s in enumerate(plan) if s.new]}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / checkpoints.UPSCALE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        checkpoints.rename_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("up-scaled %s: %d -> %d layers (%s) in %s", model_path, len(base), layers,
             strategy, out_dir)
    return record


def _build_layer(base, source: Source):
    layer = copy.deepcopy(base[source.layers[0]])
    if len(source.layers) == 2:
        upper = dict(base[source.layers[1]].named_parameters())
        for name, param in layer.named_parameters():
            param.copy_(fuse(param, upper[name]))
    if source.zeroed:
        modules = dict(layer.named_modules())
        missing = [m for m in ZEROED if m not in modules]
        if missing:
            raise UserError(f"this architecture's layers have no {', '.join(missing)}: "
                            "only the solar strategy can up-scale it")
        for name in ZEROED:
            for param in modules[name].parameters():
                param.zero_()
    return layer


def fuse(lower, upper, reg: float = SINKHORN_REG):
    """The average of ``lower`` and ``upper`` with ``upper``'s rows aligned by OT."""
    if lower.ndim != 2:
        return (lower + upper) / 2
    coupling = sinkhorn(_squared_distances(lower, upper), reg)
    aligned = (coupling * coupling.shape[0]) @ upper.float()  # rows of n*T sum to 1
    return ((lower.float() + aligned) / 2).to(lower.dtype)


def _squared_distances(a, b):
    import torch

    return torch.cdist(a.float(), b.float()) ** 2


def sinkhorn(cost, reg: float, iterations: int = 200):
    """Entropic OT plan between uniform marginals (log domain; cost scaled to [0, 1])."""
    import torch

    n, m = cost.shape
    scaled = cost / cost.max().clamp_min(1e-12)
    log_k = -scaled / reg
    log_a = torch.full((n,), -torch.log(torch.tensor(float(n))))
    log_b = torch.full((m,), -torch.log(torch.tensor(float(m))))
    f, g = torch.zeros(n), torch.zeros(m)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(log_k + g[None, :], dim=1)
        g = log_b - torch.logsumexp(log_k + f[:, None], dim=0)
    return torch.exp(log_k + f[:, None] + g[None, :])


def _rebuild_config(config, plan: list[Source]) -> None:
    types = getattr(config, "layer_types", None)
    if types is not None:
        config.layer_types = [types[s.layers[-1]] for s in plan]
    config.num_hidden_layers = len(plan)


def train(link: Link) -> dict:
    """Up-scale the link's start model into ``ckpt/<run_id>/epoch-1``."""
    target = link.root / f"{link.run.unit}-{link.run.checkpoints[-1]}"
    model = next(m for m in link.study.models if m.name == link.run.model)
    if not target.is_dir():
        upscale_model(link.start, link.method.strategy, link.method.layers, target,
                      trust_remote_code=model.trust_remote_code)
    return checkpoints.mark_done(link.root, {"epochs_done": [1], "checkpoints": [str(target)],
                                             "final_loss": None, "skipped": False})
