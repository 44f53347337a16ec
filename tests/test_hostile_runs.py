"""Careless operation of a study: a deleted checkpoint, `train` beside a running `run`,
evaluations that produced no score. None of them may end as "done" or exit 0."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sftlab.cli import main
from sftlab.orchestrate import run_study
from sftlab.store import DriverLock, Store
from sftlab.study import plan, study_from_dict
from sftlab.train import TrainConfig, train_on_rows
from sftlab.train import checkpoints as ck

sys.path.insert(0, str(Path(__file__).parent))
from test_orchestrate import FAKES, HERE, fake_study_dict  # noqa: E402
from test_train import make_rows  # noqa: E402


def test_a_deleted_epoch_is_trained_again_not_reported_done(tiny_llama, tmp_path):
    cfg = TrainConfig.of("full", learning_rate=3e-3, batch_size=8, epochs=2,
                         logging_steps=1, lr_scheduler="constant", warmup_ratio=0.0, seed=7)
    rows = make_rows(16)
    root = tmp_path / "run"
    train_on_rows(str(tiny_llama), rows, cfg, root)
    before = load_file(root / "epoch-2" / "model.safetensors")
    shutil.rmtree(root / "epoch-1")
    summary = train_on_rows(str(tiny_llama), rows, cfg, root)
    assert not summary.get("skipped") and ck.list_epochs(root) == [1, 2]
    assert ck.complete(root, 2)
    after = load_file(root / "epoch-2" / "model.safetensors")
    for name, tensor in before.items():  # deterministic: the retrained epoch is the same
        torch.testing.assert_close(after[name], tensor, rtol=1e-4, atol=1e-5)


def test_repair_keeps_the_unbroken_epochs_and_drops_the_done_record(tmp_path):
    root = tmp_path / "run"
    for e in (1, 2, 4, 5):
        (root / f"epoch-{e}").mkdir(parents=True)
    (root / ck.DONE_RECORD).write_text("{}")
    assert ck.repair(root) == [4, 5]
    assert ck.list_epochs(root) == [1, 2] and not (root / ck.DONE_RECORD).exists()
    assert ck.repair(root) == []


def test_train_refuses_to_run_beside_a_driver(tmp_path, capsys):
    raw = fake_study_dict(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = study_from_dict(raw)
    with DriverLock(study.out_dir, study.name):
        assert main(["train", str(path), "--all"]) == 2
    err = capsys.readouterr().err
    assert "another `sftlab run` is driving study 'fake'" in err
    assert not (Path(study.out_dir) / "ckpt").exists()
    with DriverLock(study.out_dir, study.name, command="train"), \
            pytest.raises(Exception, match="another `sftlab train` is driving"):
        run_study(study, handlers=FAKES, progress=False)


# -- an evaluation whose every item failed (a judge answering 401): failed, not done ------


def nan_evaluate(payload: dict) -> dict:
    """The real result-storing step of the evaluate handler, fed with results whose
    judge failed on every item (value NaN, n = 0) for mmlu and a good one for gsm8k."""
    from sftlab.evaluate.runner import EvalResult
    from sftlab.execute.handlers import store_results, study_of

    study = study_of(payload)
    out = Path(study.out_dir)
    results = []
    for spec in payload["evals"]:
        scratch = out / "jobs" / f"scratch-{spec['id']}.jsonl"
        scratch.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps({"item_id": "0", "score": None}) + "\n")
        bad = spec["task"] == "mmlu"
        results.append(EvalResult(spec["task"], spec["shots"], spec["format"], "1", "accuracy",
                                  math.nan if bad else 50.0, math.nan, 0 if bad else 5,
                                  {"error": 5} if bad else {"pass": 5}, str(scratch)))
    return store_results(out, payload["evals"], results)


def test_evaluations_without_a_score_fail_and_are_retried(tmp_path, capsys):
    raw = fake_study_dict(tmp_path, grid={"sizes": [8], "methods": ["full"],
                                          "settings": ["single"]})
    raw["models"] = raw["models"][:1]
    raw["datasets"] = raw["datasets"][:1]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    handlers = {**FAKES, "evaluate": f"{HERE.parent / 'test_hostile_runs.py'}:nan_evaluate"}
    study = study_from_dict(raw)
    summary = run_study(study, handlers=handlers, progress=False)
    n_mmlu = sum(e.task == "mmlu" for e in plan(study).evaluations)
    assert summary["stages"]["evaluate"]["failed"] == n_mmlu > 0
    store = Store.read(Path(study.out_dir) / "store.sqlite")
    try:
        assert {r["task"] for r in store.results()} == {"gsm8k"}
        assert all("no item could be scored" in f["error"] for f in store.failures())
    finally:
        store.close()
    evals = Path(study.out_dir) / "evals"
    for record in evals.glob("*.json"):
        assert json.loads(record.read_text())["task"] == "gsm8k"
    # the CLI: printed and exit 1; --retry-failed runs them again
    import sftlab.orchestrate as orchestrate

    saved = orchestrate.HANDLERS
    orchestrate.HANDLERS = handlers
    try:
        assert main(["run", str(path), "--quiet", "--retry-failed"]) == 1
    finally:
        orchestrate.HANDLERS = saved
    out = capsys.readouterr().out
    assert f"{n_mmlu} failed" in out
