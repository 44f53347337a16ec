"""Training: learning happens, LoRA/DoRA touch only adapters, prompts carry no loss,
and the micro-batch split does not change the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from sftlab.study.spec import LoraSpec
from sftlab.train import TrainConfig, train_on_rows
from sftlab.train.batching import StepBatchSampler, padding_stats, step_batches

PROMPT = "###Question: {q}\n\n###Answer: "


def make_rows(n: int = 32) -> list[dict]:
    """A small overfit set of arithmetic questions with answers of varied length."""
    rows = []
    for i in range(n):
        a, b = i % 8, i // 8
        answer = f"{a} + {b} = {a + b}" + " yes" * (i % 3)
        rows.append({"prompt": PROMPT.format(q=f"What is {a} + {b}?"), "completion": answer})
    return rows


def config(**overrides) -> TrainConfig:
    base = dict(method_type="full", learning_rate=3e-3, batch_size=8, epochs=3,
                logging_steps=1, lr_scheduler="constant", warmup_ratio=0.0, seed=7)
    return TrainConfig.of(**{**base, **overrides})


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


class KeepModel(TrainerCallback):
    """Keeps the state dict of the trained model at the end of training."""

    state: dict | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "olmo"])
def test_full_run_learns_and_checkpoints_every_epoch(arch, tiny_model_factory, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = tiny_model_factory(arch)
    run = tmp_path / "run"
    summary = train_on_rows(str(model_path), make_rows(), config(), run)

    log = read_log(run)
    assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second"} <= set(log[0])
    assert log[-1]["loss"] < 0.7 * log[0]["loss"], (log[0]["loss"], log[-1]["loss"])
    assert summary["epochs_done"] == [1, 2, 3]
    assert summary["final_loss"] == log[-1]["loss"] and summary["tokens_per_second"] > 0
    assert summary["disk_bytes"] > 0
    for epoch in (1, 2, 3):
        assert (run / f"epoch-{epoch}" / "model.safetensors").is_file()
    # resume state is gone once the run is complete; nothing half-written is left
    assert not list(run.rglob("optimizer.pt")) and not (run / ".staging").exists()
    loaded = AutoModelForCausalLM.from_pretrained(run / "epoch-3")
    tokenizer = AutoTokenizer.from_pretrained(run / "epoch-3")
    assert tokenizer.eos_token_id == loaded.config.eos_token_id
    trained = load_file(run / "epoch-3" / "model.safetensors")
    base = load_file(model_path / "model.safetensors")
    assert any(not torch.equal(trained[k], base[k]) for k in base)


def test_every_epoch_ends_with_a_log_row(tiny_llama, tmp_path):
    run = tmp_path / "run"  # 2 steps per epoch, far fewer than logging_steps
    summary = train_on_rows(str(tiny_llama), make_rows(8), config(batch_size=4, epochs=2,
                                                                   logging_steps=10), run)
    log = read_log(run)
    assert [(r["step"], r["epoch"]) for r in log] == [(2, 1.0), (4, 2.0)]
    assert summary["final_loss"] == log[-1]["loss"] and log[-1]["loss"] < log[0]["loss"]


def test_lora_changes_only_the_adapter(tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    keep = KeepModel()
    cfg = config(method_type="lora", epochs=2, learning_rate=1e-2,
                 lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    run = tmp_path / "run"
    train_on_rows(str(tiny_llama), make_rows(), cfg, run, callbacks=[keep])

    base = load_file(tiny_llama / "model.safetensors")
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in keep.state.items() if "lora_" not in k}
    assert set(frozen) == set(base)
    for name, weight in base.items():
        assert torch.equal(frozen[name], weight), f"base weight {name} changed"
    adapter = load_file(run / "epoch-2" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero
    record = json.loads((run / "epoch-2" / "sftlab_base.json").read_text())
    assert Path(record["base_model"]) == tiny_llama.resolve()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(record["base_model"]),
                                      run / "epoch-2")
    assert model.peft_config["default"].r == 4


def test_dora_trains_magnitude_vectors(tiny_qwen2, tmp_path):
    cfg = config(method_type="dora", epochs=2, learning_rate=1e-2,
                 lora=LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    run = tmp_path / "run"
    train_on_rows(str(tiny_qwen2), make_rows(), cfg, run)
    first = load_file(run / "epoch-1" / "adapter_model.safetensors")
    last = load_file(run / "epoch-2" / "adapter_model.safetensors")
    magnitudes = [k for k in last if "lora_magnitude_vector" in k]
    assert len(magnitudes) == 2 * 2  # q_proj and v_proj in each of 2 layers
    assert any(not torch.equal(first[k], last[k]) for k in magnitudes)
    assert json.loads((run / "epoch-2" / "adapter_config.json").read_text())["use_dora"] is True


def test_prompt_tokens_carry_no_loss(tiny_llama, tmp_path):
    from sftlab.train.trainer import build_trainer

    rows = make_rows(8)
    trainer = build_trainer(str(tiny_llama), rows, config(batch_size=4), tmp_path / "stage",
                            callbacks=[], progress=False)
    tok = trainer.processing_class
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        prompt_ids = tok(row["prompt"])["input_ids"]  # exactly what an evaluator feeds
        answer_ids = tok(row["completion"], add_special_tokens=False)["input_ids"]
        labels, ids = example["labels"], example["input_ids"]
        assert ids == prompt_ids + answer_ids + [tok.eos_token_id]
        assert labels == [-100] * len(prompt_ids) + answer_ids + [tok.eos_token_id]

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model
    assert model.sftlab_labelled_head  # CPU: the head runs at labelled positions only
    captured = {}

    def keep_grad(module, args, output):
        output.retain_grad()
        captured["hidden"] = output

    hook = model.model.norm.register_forward_hook(keep_grad)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    hook.remove()
    grad = captured["hidden"].grad.abs().sum(-1)  # (batch, seq): position t predicts token t+1
    target = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
    assert torch.all(grad[target == -100] == 0), "a masked prompt/padding position got gradient"
    assert torch.all(grad[target != -100] > 0)

    with torch.no_grad():  # the loss is the mean NLL over response tokens only
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        manual = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
            ignore_index=-100)
    assert torch.allclose(loss.detach(), manual, atol=1e-5)


def test_micro_batch_split_does_not_change_result(tiny_llama, tmp_path):
    weights = {}
    for micro, checkpointing in ((8, False), (1, False), (2, True)):
        run = tmp_path / f"micro{micro}"
        cfg = config(micro_batch_size=micro, epochs=2, learning_rate=1e-3, lr_scheduler="cosine",
                     warmup_ratio=0.1, gradient_checkpointing=checkpointing)
        train_on_rows(str(tiny_llama), make_rows(), cfg, run)
        weights[micro] = load_file(run / "epoch-2" / "model.safetensors")
    base = load_file(tiny_llama / "model.safetensors")
    assert any(not torch.equal(weights[8][k], base[k]) for k in base)
    for micro in (1, 2):  # 2 x 4 also recomputes activations (gradient checkpointing)
        diff = max((weights[8][k] - weights[micro][k]).abs().max().item() for k in base)
        assert diff < 1e-5, f"8 x 1 vs {micro} x {8 // micro}: max abs diff {diff}"


def test_steps_do_not_depend_on_split_or_processes():
    lengths = [(i * 37) % 101 + 5 for i in range(203)]
    steps = step_batches(lengths, 16, seed=3, epoch=1)
    assert sorted(i for s in steps for i in s) == list(range(203))
    assert all(len(s) == 16 for s in steps[:-1]) and len(steps[-1]) == 203 % 16

    def per_step(samplers):
        out = []
        for sampler in samplers:
            sampler.set_epoch(1)
            out.append(list(sampler))
        accum = samplers[0].grad_accum
        flat = []
        for k in range(len(steps)):
            step = set()
            for micro_batches in out:
                for mb in micro_batches[k * accum:(k + 1) * accum]:
                    step.update(mb)
            flat.append(step)
        return flat

    one = per_step([StepBatchSampler(lengths, batch_size=16, micro_batch_size=16, seed=3)])
    split = per_step([StepBatchSampler(lengths, batch_size=16, micro_batch_size=4, seed=3)])
    two = per_step([StepBatchSampler(lengths, batch_size=16, micro_batch_size=2, world_size=2,
                                     rank=r, seed=3) for r in (0, 1)])
    assert one == split == two == [set(s) for s in steps]


def test_length_grouping_cuts_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = (torch.rand(2000, generator=gen) ** 2 * 400 + 10).long().tolist()
    grouped = list(StepBatchSampler(lengths, batch_size=16, micro_batch_size=8))
    plain = list(StepBatchSampler(lengths, batch_size=16, micro_batch_size=8,
                                  group_by_length=False))
    real, processed = padding_stats(grouped, lengths)
    real_plain, processed_plain = padding_stats(plain, lengths)
    assert real == real_plain
    assert 1 - real / processed < 0.10 < 1 - real_plain / processed_plain


def test_tokenisation_matches_inference_prompt(tiny_olmo):
    from transformers import AutoTokenizer

    from sftlab.train.data import tokenize_rows

    row = {"prompt": PROMPT.format(q="Write code"), "completion": "def f():\n    return 1"}
    for extra in ({}, {"add_eos_token": True}):  # a tokenizer that appends EOS itself
        tok = AutoTokenizer.from_pretrained(tiny_olmo, **extra)
        cols = tokenize_rows([row], tok)
        ids, mask = cols["input_ids"][0], cols["completion_mask"][0]
        prompt = [i for i in tok(row["prompt"])["input_ids"] if i != tok.eos_token_id]
        assert ids[:len(prompt)] == prompt and mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))
        assert ids.count(tok.eos_token_id) == 1 and ids[-1] == tok.eos_token_id
        assert tok.decode(ids[len(prompt):-1]) == row["completion"]


@pytest.mark.gpu
def test_gpu_bf16_run_learns(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from sftlab.train.trainer import resolve_precision

    assert resolve_precision("auto") in ("bf16", "fp32")
    run = tmp_path / "run"
    train_on_rows(str(tiny_llama), make_rows(), config(precision="auto"), run)
    log = read_log(run)
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    assert AutoModelForCausalLM.from_pretrained(run / "epoch-3").config.vocab_size > 0


def test_batch_split_and_precision_errors_are_clear(tiny_llama, tmp_path):
    from sftlab.errors import UserError

    assert TrainConfig.of(learning_rate=1e-3, epochs=1, batch_size=32).micro_and_accumulation() == (8, 4)
    assert TrainConfig.of(learning_rate=1e-3, epochs=1, batch_size=12, micro_batch_size=3).micro_and_accumulation(2) == (3, 2)
    with pytest.raises(UserError, match="micro_batch_size 5 does not divide"):
        TrainConfig.of(learning_rate=1e-3, epochs=1, batch_size=16, micro_batch_size=5).micro_and_accumulation()
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="bf16 needs a GPU"):
            train_on_rows(str(tiny_llama), make_rows(8), config(precision="bf16"), tmp_path / "r")
        assert not list((tmp_path / "r").glob("epoch-*"))
