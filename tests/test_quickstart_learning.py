"""The quickstart shows learning: a short full fine-tune on the embedded Alpaca facts
lifts NQ-open (same facts, asked in other words) far above the base model."""

from __future__ import annotations

import json

import pytest

from sftlab.data.embedded import write_embedded_data
from sftlab.data.records import join_input
from sftlab.evaluate.runner import TaskRequest, evaluate_model
from sftlab.study.template import render_prompt
from sftlab.train.config import TrainConfig
from sftlab.train.run import train_on_rows

TEMPLATE = "###Question: {instruction}\n\n###Answer: {response}"
SIZE = 640  # 160 optimizer steps over two epochs (the quickstart: 400 rows, 100 steps)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (several threads on a busy CPU crawl)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_facts_training_lifts_nq_open_over_the_base_model(tiny_llama, tmp_path, one_thread):
    paths = write_embedded_data(tmp_path / "data", n_train=SIZE, n_eval=60)
    rows = [{"prompt": render_prompt(TEMPLATE, join_input(r["instruction"], r["input"])),
             "completion": r["output"]}
            for r in json.loads(paths["alpaca_data"].read_text())]
    nq = [TaskRequest("nq_open", 0, data=str(tmp_path / "data"),
                      options={"max_new_tokens": 8})]

    def score(model: str, name: str):
        [result] = evaluate_model(model, tasks=nq, out_dir=tmp_path / name, template=TEMPLATE,
                                  progress=False)
        return result

    base = score(str(tiny_llama), "base")
    cfg = TrainConfig.of(method_type="full", learning_rate=3e-3, batch_size=8, epochs=2,
                      warmup_ratio=0.1, seed=42)
    summary = train_on_rows(str(tiny_llama), rows, cfg, tmp_path / "ckpt")
    trained = score(summary["checkpoints"][-1], "trained")
    assert base.n == trained.n == 60
    assert base.value <= 5.0, base.summary()
    assert trained.value >= base.value + 20.0, (base.summary(), trained.summary())
    predictions = [json.loads(line) for line in open(trained.predictions_path)]
    right = [p for p in predictions if p["correct"]]
    assert right and all(len(p["output"]) < 40 for p in right)  # short answers, not rambling
