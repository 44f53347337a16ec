"""Continued pretraining: raw text sources, packing without cross-document attention,
RoPE scaling written into the checkpoint, learning at a context 4x the model's."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from sftlab.cli import main
from sftlab.data.text import read_documents
from sftlab.errors import UserError
from sftlab.study import plan, study_from_dict

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega").split()


def document(seed: int, words: int) -> str:
    """A document with structure to learn: runs of the Greek alphabet from random starts."""
    rng = random.Random(seed)
    out = []
    while len(out) < words:
        start = rng.randrange(len(WORDS))
        out += [WORDS[(start + i) % len(WORDS)] for i in range(rng.randint(4, 12))] + ["."]
    return " ".join(out[:words])


def test_text_sources_files_folders_and_json_lines(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "2.txt").write_text("two")
    (folder / "1.txt").write_text("one")
    (folder / "3.txt").write_text("   \n")
    lines = tmp_path / "c.jsonl"
    lines.write_text(json.dumps({"text": "x"}) + "\n\n" + json.dumps({"text": "y"}) + "\n")
    assert list(read_documents(str(tmp_path / "a.txt"), where="d")) == ["first document\n"]
    assert list(read_documents(str(folder), where="d")) == ["one", "two"]
    assert list(read_documents(str(lines), where="d")) == ["x", "y"]
    lines.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UserError, match="c.jsonl:1"):
        list(read_documents(str(lines), where="d"))


def cpt_study(tmp_path: Path, model: Path, corpus: Path, **method) -> dict:
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "hi", "output": "there"}] * 4))
    return {
        "name": "cpt", "output_dir": str(tmp_path / "out"), "max_length": 256,
        "models": [{"name": "m", "path": str(model)}],
        "datasets": [{"name": "a", "format": "alpaca", "path": str(tmp_path / "a.json")}],
        "grid": {"sizes": [4], "methods": ["cpt"]},
        "methods": {"cpt": {"learning_rate": 3e-3, "batch_size": 4, "epochs": 3,
                            "lr_scheduler": "constant", "warmup_ratio": 0.0,
                            "data": {"format": "text", "path": str(corpus)}, **method}},
        "training": {"logging_steps": 1},
    }


def test_cpt_keys_are_validated_with_their_paths(tmp_path):
    raw = cpt_study(tmp_path, tmp_path, tmp_path / "c.txt")
    raw["methods"]["cpt"]["rope"] = {"type": "yarnn", "factor": 4}
    raw["methods"]["cpt"]["adapter"] = "qlora"
    raw["datasets"].append({"name": "t", "format": "text", "path": "x.txt"})
    with pytest.raises(UserError) as err:
        study_from_dict(raw)
    text = "\n".join(err.value.problems)
    assert "methods.cpt.rope.type: unknown value 'yarnn' (did you mean 'yarn'?)" in text
    assert "methods.cpt.adapter: unknown value 'qlora'" in text
    assert "datasets[1].format: format 'text' is raw text for continued pretraining" in text
    raw = cpt_study(tmp_path, tmp_path, tmp_path / "c.txt")
    del raw["methods"]["cpt"]["data"]
    with pytest.raises(UserError, match="a cpt method needs its own raw text"):
        study_from_dict(raw)


def test_packed_documents_do_not_attend_to_each_other(tiny_llama, tmp_path):
    """The batches sftlab trains cpt on: documents packed into one row, EOS after each,
    positions restarting per document, and each document's logits as if alone."""
    from sftlab.train import TrainConfig
    from sftlab.train.trainer import build_trainer

    docs = [document(i, n) for i, n in enumerate((60, 25, 40))]
    rows = [{"text": d} for d in docs]
    cfg = TrainConfig.of("cpt", learning_rate=1e-3, batch_size=1, epochs=1, max_length=512,
                         data={"format": "text", "path": "x"})
    trainer = build_trainer(str(tiny_llama), rows, cfg, tmp_path / "staging", callbacks=[],
                            progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) == 3  # the three documents, one row
    eos = trainer.processing_class.eos_token_id
    ends = [s - 1 for s in starts[1:]] + [len(positions) - 1]
    assert all(batch["input_ids"][0, e].item() == eos for e in ends)
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"].to(model.device),
                       position_ids=batch["position_ids"].to(model.device)).logits[0]
        for start, end in zip(starts, ends, strict=True):
            alone = model(input_ids=batch["input_ids"][:, start:end + 1].to(model.device)).logits[0]
            assert (packed[start:end + 1] - alone).abs().max().item() < 1e-4
    labels = batch["labels"][0]
    assert all(labels[s].item() == -100 for s in starts)  # no prediction across documents


@pytest.mark.parametrize("adapter", ["full", "dora"])
def test_cpt_extends_the_context_and_learns_on_long_documents(
        tiny_model_factory, tmp_path, adapter):
    """A model made for 256 positions, RoPE-scaled by 4 and trained on 1,024-token rows."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model = tiny_model_factory("llama", max_position_embeddings=256)
    tokenizer = AutoTokenizer.from_pretrained(model)
    corpus = tmp_path / "corpus.jsonl"
    docs = [document(i, 330) for i in range(6)]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert min(len(tokenizer(d)["input_ids"]) for d in docs) > 1024  # longer than a row
    rope = {"type": "linear", "factor": 4} if adapter == "full" else {"type": "yarn", "factor": 4}
    method = {"max_length": 1024, "adapter": adapter, "rope": rope, "batch_size": 2,
              "learning_rate": 1e-2}
    if adapter == "dora":
        method.update(lora={"r": 16, "alpha": 32, "dropout": 0.0}, learning_rate=3e-2)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(cpt_study(tmp_path, model, corpus, **method)))
    [run] = plan(study_from_dict(yaml.safe_load(study_file.read_text()))).runs
    assert main(["train", str(study_file), "--run", run.id, "--json"]) == 0  # prepares first
    root = tmp_path / "out" / "ckpt" / run.id
    log = [json.loads(x) for x in (root / "train_log.jsonl").read_text().splitlines()]
    # an adapter on a 64-wide random model learns slower than its full weights
    assert log[-1]["loss"] < (0.8 if adapter == "full" else 0.97) * log[0]["loss"], (log[0], log[-1])
    final = root / "epoch-3"
    config_dir = final if adapter == "full" else root / "base"
    config = AutoConfig.from_pretrained(config_dir)
    assert config.max_position_embeddings == 1024
    assert config.rope_parameters["rope_type"] == rope["type"]
    assert config.rope_parameters["factor"] == 4
    if rope["type"] == "yarn":
        assert config.rope_parameters["original_max_position_embeddings"] == 256
    if adapter == "full":
        loaded = AutoModelForCausalLM.from_pretrained(final)
    else:
        from peft import PeftModel

        assert json.loads((final / "adapter_config.json").read_text())["use_dora"] is True
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(config_dir), final)
    ids = torch.tensor([tokenizer(docs[0])["input_ids"][:1000]])
    with torch.no_grad():
        assert torch.isfinite(loaded(ids).logits).all()
