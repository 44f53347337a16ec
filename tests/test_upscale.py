"""Depth up-scaling: layer plans, function preservation, rebuilt per-layer fields, training."""

from __future__ import annotations

import json

import pytest
import torch

from sftlab.methods.upscale import Source, fuse, layer_plan, sinkhorn, upscale_model


def sources(strategy: str, base: int, layers: int) -> list[tuple[int, ...]]:
    return [s.layers for s in layer_plan(strategy, base, layers)]


def test_layer_plans_for_32_to_48_match_the_papers():
    solar = sources("solar", 32, 48)
    assert solar == [(i,) for i in range(24)] + [(i,) for i in range(8, 32)]
    pro = layer_plan("llama_pro", 32, 48)
    assert [i for i, s in enumerate(pro) if s.new] == list(range(2, 48, 3))  # after every 2
    assert all(s.zeroed and s.layers == (pro[i - 1].layers[0],) for i, s in enumerate(pro) if s.new)
    deus = layer_plan("opt_deus", 32, 48)
    assert [i for i, s in enumerate(deus) if s.new] == list(range(16, 48, 2))
    assert deus[:16] == [Source((i,), new=False) for i in range(16)]
    assert deus[16] == Source((15, 16), new=True, zeroed=True) and deus[17].layers == (16,)
    assert deus[46] == Source((30, 31), new=True, zeroed=True) and deus[47].layers == (31,)


@pytest.mark.parametrize("strategy, base, layers", [
    ("solar", 4, 9), ("solar", 4, 3), ("llama_pro", 4, 9), ("opt_deus", 4, 8), ("nope", 4, 6)])
def test_impossible_plans_are_refused(strategy, base, layers):
    from sftlab.errors import UserError

    with pytest.raises(UserError):
        layer_plan(strategy, base, layers)


def test_sinkhorn_coupling_and_fusion_of_a_permuted_matrix():
    torch.manual_seed(0)
    lower = torch.randn(16, 8)
    upper = lower[torch.randperm(16)]
    plan = sinkhorn(torch.cdist(lower, upper) ** 2, 0.06)
    assert torch.allclose(plan.sum(1), torch.full((16,), 1 / 16), atol=1e-4)
    # rescaled by n, the aligned rows are (entropy-blurred) matching rows: fusing mostly
    # undoes the permutation, where a plain average would not
    error = (fuse(lower, upper) - lower).norm() / lower.norm()
    plain = ((lower + upper) / 2 - lower).norm() / lower.norm()
    assert error < 0.15 and plain > 0.5, (error, plain)


def _models(base_path, out):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    up = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    return base, up


@pytest.mark.parametrize("arch", ["llama", "qwen2", "olmo"])
@pytest.mark.parametrize("strategy", ["llama_pro", "opt_deus"])
def test_function_preserving_strategies_keep_logits_and_cached_generation(
        tiny_model_factory, tmp_path, arch, strategy):
    path = tiny_model_factory(arch, num_layers=4)
    record = upscale_model(str(path), strategy, 6, tmp_path / "up")
    base, up = _models(path, tmp_path / "up")
    assert up.config.num_hidden_layers == len(up.model.layers) == 6
    assert [layer.self_attn.layer_idx for layer in up.model.layers] == list(range(6))
    if getattr(up.config, "layer_types", None) is not None:
        assert len(up.config.layer_types) == 6
    ids = torch.tensor([[5, 17, 33, 2, 40, 41, 9, 12]])
    with torch.no_grad():
        diff = (base(ids).logits - up(ids).logits).abs().max().item()
    assert diff <= 1e-5
    kwargs = dict(max_new_tokens=12, do_sample=False, use_cache=True)
    assert torch.equal(base.generate(ids, **kwargs), up.generate(ids, **kwargs))
    for i in record["new_layers"]:
        assert not up.model.layers[i].self_attn.o_proj.weight.any()
        assert not up.model.layers[i].mlp.down_proj.weight.any()
    assert json.loads((tmp_path / "up" / "sftlab_upscale.json").read_text())["new_layers"] == \
        record["new_layers"]


def test_solar_copies_the_right_source_layers(tiny_model_factory, tmp_path):
    path = tiny_model_factory("qwen2", num_layers=4)
    upscale_model(str(path), "solar", 6, tmp_path / "up")
    base, up = _models(path, tmp_path / "up")
    assert [s for s, in sources("solar", 4, 6)] == [0, 1, 2, 1, 2, 3]
    for i, source in enumerate([0, 1, 2, 1, 2, 3]):
        for (name, p), (_, q) in zip(up.model.layers[i].named_parameters(),
                                     base.model.layers[source].named_parameters(), strict=True):
            assert torch.equal(p, q), (i, name)
    assert up.config.layer_types == [base.config.layer_types[s] for s in [0, 1, 2, 1, 2, 3]]
    ids = torch.tensor([[5, 17, 33, 2]])
    out = up.generate(ids, max_new_tokens=6, do_sample=False)  # a stale layer_idx would raise
    assert out.shape == (1, 10)


def test_opt_deus_fuses_new_layers_from_their_neighbours(tiny_model_factory, tmp_path):
    path = tiny_model_factory("llama", num_layers=4)
    upscale_model(str(path), "opt_deus", 6, tmp_path / "up")
    base, up = _models(path, tmp_path / "up")
    # layout: base 0, 1, new(1,2), base 2, new(2,3), base 3
    assert torch.equal(up.model.layers[3].self_attn.q_proj.weight,
                       base.model.layers[2].self_attn.q_proj.weight)
    fused = up.model.layers[2].self_attn.q_proj.weight
    lower = base.model.layers[1].self_attn.q_proj.weight
    upper = base.model.layers[2].self_attn.q_proj.weight
    assert torch.allclose(fused, fuse(lower, upper), atol=1e-6)
    assert not torch.allclose(fused, lower) and not torch.allclose(fused, upper)
    # the coupling rescaled by n, not the released code's T (rows summing to 1/n)
    coupling = sinkhorn(torch.cdist(lower, upper) ** 2, 0.06)
    released = (lower + coupling @ upper) / 2
    assert torch.allclose(released, lower / 2, atol=0.05 * lower.abs().max().item())
    assert fused.norm() > released.norm()


def test_the_cli_writes_a_model_that_trains_with_only_its_new_layers(tiny_model_factory,
                                                                      tmp_path):
    from test_train import make_rows

    from sftlab.cli import main
    from sftlab.train import TrainConfig, train_on_rows

    path = tiny_model_factory("llama", num_layers=4)
    out = tmp_path / "up"
    assert main(["upscale", "--model", str(path), "--strategy", "llama_pro", "--layers", "6",
                 "--out", str(out)]) == 0
    cfg = TrainConfig.of(learning_rate=5e-3, batch_size=8, epochs=1, logging_steps=1,
                         trainable="new", lr_scheduler="constant", warmup_ratio=0.0)
    summary = train_on_rows(str(out), make_rows(), cfg, tmp_path / "run")
    _, before = _models(path, out)
    _, after = _models(path, summary["checkpoints"][-1])
    new = set(json.loads((out / "sftlab_upscale.json").read_text())["new_layers"])
    changed = {name for (name, p), (_, q) in zip(before.named_parameters(),
                                                 after.named_parameters(), strict=True)
               if not torch.equal(p, q)}
    assert changed and all(name.startswith(tuple(f"model.layers.{i}." for i in new))
                           for name in changed)
    assert any(f"model.layers.{i}.mlp.down_proj" in name for i in new for name in changed)


def test_a_stale_layer_idx_would_change_cached_generation(tiny_model_factory, tmp_path):
    """Why layer_idx is rebuilt: copies keeping their source's index share a KV-cache slot."""
    path = tiny_model_factory("llama", num_layers=4)
    upscale_model(str(path), "solar", 6, tmp_path / "up")
    _, up = _models(path, tmp_path / "up")
    ids = torch.tensor([[5, 17, 33, 2, 40, 41, 9, 12]])
    kwargs = dict(max_new_tokens=12, do_sample=False)
    without_cache = up.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(up.generate(ids, use_cache=True, **kwargs), without_cache)
    for layer, source in zip(up.model.layers, [0, 1, 2, 1, 2, 3], strict=True):
        layer.self_attn.layer_idx = source  # what a plain deepcopy leaves
    assert not torch.equal(up.generate(ids, use_cache=True, **kwargs), without_cache)
