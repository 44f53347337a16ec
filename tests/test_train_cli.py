"""`sftlab train STUDY --run ID | --all [--json]` on a tiny study, and on real data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from sftlab.cli import main
from sftlab.study import load_study, plan
from sftlab.train import checkpoint_dir, completed_epochs, train_run

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_rows  # noqa: E402


def write_study(tmp_path: Path, model: Path, methods: list[str], epochs: int = 2) -> Path:
    study = {
        "name": "cli-train",
        "seed": 5,
        "output_dir": str(tmp_path / "out"),
        "max_length": 256,
        "models": [{"name": "tiny", "path": str(model)}],
        "datasets": [{"name": "arith", "format": "alpaca", "path": str(tmp_path / "a.json")}],
        "grid": {"sizes": [32], "methods": methods},
        "methods": {
            "full": {"learning_rate": 3e-3, "batch_size": 8, "epochs": epochs},
            "lora": {"learning_rate": 1e-2, "batch_size": 8, "epochs": epochs,
                     "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        },
        "training": {"logging_steps": 1, "report_to": ["tensorboard"]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def prepare(study_path: Path, rows: list[dict]) -> None:
    """Write each run's prepared set the way the data stage does (contract: JSONL rows)."""
    study = load_study(study_path)
    for run in plan(study).runs:
        target = study.out_dir / "data" / f"{run.data_key}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(
            json.dumps({"id": str(i), "source": "arith", "instruction": "", "response": r["completion"],
                        **r}) + "\n" for i, r in enumerate(rows)))


def test_train_all_then_nothing_left(tiny_llama, tmp_path, capsys):
    study_path = write_study(tmp_path, tiny_llama, ["full", "lora"])
    prepare(study_path, make_rows())

    assert main(["train", str(study_path), "--all", "--json"]) == 0
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(summaries) == 2 and all(s["epochs_done"] == [1, 2] for s in summaries)
    study = load_study(study_path)
    for run in plan(study).runs:
        assert completed_epochs(study, run.id) == [1, 2]
        weights = "model.safetensors" if run.method == "full" else "adapter_model.safetensors"
        assert (checkpoint_dir(study, run.id, 2) / weights).is_file()
        events = list((checkpoint_dir(study, run.id, 2).parent / "tensorboard").glob("events.*"))
        assert events and events[0].stat().st_size > 0

    run = plan(study).runs[0]
    assert train_run(study, run, progress=False)["skipped"] is True
    assert main(["train", str(study_path), "--run", run.id[:6]]) == 0
    assert "already trained" in capsys.readouterr().out


def test_bad_requests_are_user_errors(tiny_llama, tmp_path, capsys):
    study_path = write_study(tmp_path, tiny_llama, ["full"])
    assert main(["train", str(study_path), "--run", "ffffffff"]) == 2
    assert "no run 'ffffffff'" in capsys.readouterr().err
    assert main(["train", str(study_path)]) == 2
    assert "--run RUN_ID" in capsys.readouterr().err
    assert main(["train", str(study_path), "--all"]) == 2  # prepares first: its data is missing
    assert "data file not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ckpt").exists()


def test_unloadable_model_is_a_user_error_and_leaves_no_run_folder(tiny_llama, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").unlink()  # the tokenizer loads, the weights do not
    study_path = write_study(tmp_path, broken, ["full"])
    prepare(study_path, make_rows(8))
    assert main(["train", str(study_path), "--all"]) == 2
    err = capsys.readouterr().err
    assert f"cannot load the model '{broken}'" in err and "Traceback" not in err
    run = plan(load_study(study_path)).runs[0]
    assert not (tmp_path / "out" / "ckpt" / run.id).exists()


@pytest.mark.shared_data
def test_learns_on_real_code_alpaca(tiny_llama, shared_data, tmp_path):
    from sftlab.study.template import render_prompt
    from sftlab.train import TrainConfig, train_on_rows

    raw = json.loads((shared_data / "code_alpaca_2k.json").read_text())[:48]
    template = "###Question: {instruction}\n\n###Answer: {response}"
    rows = [{"prompt": render_prompt(template, (r["instruction"] + "\n" + r["input"]).strip()),
             "completion": r["output"]} for r in raw]
    cfg = TrainConfig.of(learning_rate=3e-3, batch_size=8, epochs=4, logging_steps=1,
                      lr_scheduler="constant", warmup_ratio=0.0, max_length=512)
    summary = train_on_rows(str(tiny_llama), rows, cfg, tmp_path / "run")
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert summary["epochs_done"] == [1, 2, 3, 4]
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
