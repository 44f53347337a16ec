"""The training head at labelled positions only (CPU): the same loss, log-probabilities,
metrics and gradients as TRL's fused head, with the head applied to fewer rows."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer.utils import add_fused_lm_head

from sftlab.train import head as head_module
from sftlab.train.head import add_labelled_head

OUTPUTS = ("log_probs", "entropy", "is_top1")


def trl_model(path, scale_logits: float | None = None):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.train()
    if scale_logits is not None:  # a step after the head, as soft-capping models have
        own = model.forward

        def scaled(*args, **kwargs):
            out = own(*args, **kwargs)
            out.logits = out.logits * scale_logits
            return out

        model.forward = scaled
    add_fused_lm_head(model, outputs=OUTPUTS)
    return model


def batch(vocab: int) -> dict:
    """Three right-padded rows of different lengths, prompts and padding masked."""
    gen = torch.Generator().manual_seed(0)
    lengths, prompts = (12, 9, 5), (4, 6, 2)
    ids = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    labels = torch.full((3, 12), -100)
    for i, (n, p) in enumerate(zip(lengths, prompts, strict=True)):
        ids[i, :n] = torch.randint(3, vocab, (n,), generator=gen)
        mask[i, :n] = 1
        labels[i, p:n] = ids[i, p:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def run(model, inputs: dict):
    out = model(**inputs, fused_lm_head=True, num_items_in_batch=17)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("tokens_per_tile", [None, 4])
def test_labelled_head_equals_trl_fused_head(tiny_llama, monkeypatch, tokens_per_tile):
    """Same outputs and gradients as TRL's head; the head sees only the labelled rows
    (with tiles of 4 tokens: several tiles, recomputed in the backward pass)."""
    reference, ours = trl_model(tiny_llama), trl_model(tiny_llama)
    assert add_labelled_head(ours) and ours.sftlab_labelled_head
    vocab = ours.get_output_embeddings().weight.shape[0]
    if tokens_per_tile:
        monkeypatch.setattr(head_module, "TILE_ELEMENTS", tokens_per_tile * vocab)
    inputs = batch(vocab)
    seen = []
    hook = ours.get_output_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0]))
    want, want_grads = run(reference, inputs)
    got, got_grads = run(ours, inputs)
    hook.remove()

    labelled = int((inputs["labels"][:, 1:] != -100).sum())
    forward_rows = [n for n in seen if n]  # backward recomputation adds tiles again
    assert sum(forward_rows) == labelled * (2 if tokens_per_tile else 1)
    assert torch.equal(got.label_mask, want.label_mask)
    assert torch.allclose(got.loss, want.loss, atol=1e-6)
    assert torch.allclose(got.log_probs, want.log_probs, atol=1e-5)
    assert torch.allclose(got.entropy, want.entropy, atol=1e-4)
    assert torch.equal(got.is_top1, want.is_top1)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_plain_forward_and_generation_are_unchanged(tiny_llama):
    reference, ours = trl_model(tiny_llama), trl_model(tiny_llama)
    add_labelled_head(ours)
    ids = torch.tensor([[5, 9, 2, 7]])
    with torch.no_grad():
        assert torch.equal(ours(input_ids=ids).logits, reference(input_ids=ids).logits)
    reference.eval(), ours.eval()
    assert torch.equal(ours.generate(ids, max_new_tokens=4, do_sample=False),
                       reference.generate(ids, max_new_tokens=4, do_sample=False))


def test_a_batch_without_labels_gives_a_zero_loss_with_a_gradient(tiny_llama):
    ours = trl_model(tiny_llama)
    add_labelled_head(ours)
    inputs = batch(ours.get_output_embeddings().weight.shape[0])
    inputs["labels"] = torch.full_like(inputs["labels"], -100)
    out = ours(**inputs, fused_lm_head=True)
    out.loss.backward()
    assert out.loss.item() == 0.0 and not out.label_mask.any()


def test_a_model_that_transforms_its_logits_keeps_trls_head(tiny_llama):
    model = trl_model(tiny_llama, scale_logits=2.0)
    fused = model.forward
    assert not add_labelled_head(model)
    assert model.forward is fused and not getattr(model, "sftlab_labelled_head", False)
