"""Resume after kill -9 equals an uninterrupted run; 2 processes equal 1; leftovers are cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sftlab.train import TrainConfig, train_on_rows
from sftlab.train import checkpoints as ck
from sftlab.train.launch import torchrun_command

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_rows  # noqa: E402

# A worker that trains slowly (a pause after every optimizer step) so a kill lands mid-run.
WORKER = """
import json, sys, time
from transformers import TrainerCallback
from sftlab.train import TrainConfig, train_on_rows

spec = json.load(open(sys.argv[1]))

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(spec["pause"])

cfg = dict(spec["config"])
train_on_rows(spec["model"], spec["rows"], TrainConfig.of(**cfg), spec["out"], callbacks=[Slow()])
"""

CONFIG = dict(method_type="lora", learning_rate=5e-3, batch_size=8, epochs=3, logging_steps=1,
              seed=11, micro_batch_size=4, lr_scheduler="cosine", warmup_ratio=0.1,
              lora=dict(r=4, alpha=8, dropout=0.1))  # dropout: the RNG state must be restored


def _config() -> TrainConfig:
    return TrainConfig.of(**CONFIG)


def _start_worker(spec_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(spec_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "worker too slow"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_after_kill_equals_uninterrupted_run(tiny_llama, tmp_path):
    rows = make_rows()
    reference = tmp_path / "reference"
    train_on_rows(str(tiny_llama), rows, _config(), reference)

    run = tmp_path / "killed"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": str(tiny_llama), "rows": rows, "config": CONFIG,
                                "out": str(run), "pause": 0.3}))
    # kill 1: in the middle of epoch 2
    _kill_when(_start_worker(spec), lambda: (run / "epoch-1").is_dir())
    assert ck.list_epochs(run) == [1]
    # kill 2: right after epoch 2 lands (while the previous epoch is being stripped)
    _kill_when(_start_worker(spec), lambda: (run / "epoch-2").is_dir())
    assert ck.list_epochs(run)[-1] == 2 and ck.is_resumable(run / "epoch-2")

    summary = train_on_rows(str(tiny_llama), rows, _config(), run)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_done"] == [1, 2, 3]
    name = "adapter_model.safetensors"
    for epoch in (1, 2, 3):
        want = load_file(reference / f"epoch-{epoch}" / name)
        got = load_file(run / f"epoch-{epoch}" / name)
        diff = max((want[k] - got[k]).abs().max().item() for k in want)
        assert diff <= 1e-5, f"epoch {epoch}: max abs diff {diff}"
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # 4 steps x 3 epochs, none repeated after the resumes
    assert not list(run.rglob("optimizer.pt"))

    again = train_on_rows(str(tiny_llama), rows, _config(), run)  # complete: a no-op
    assert again["skipped"] is True
    # killed after the last checkpoint but before the done record: nothing is retrained
    stamp = (run / "epoch-3" / name).stat().st_mtime_ns
    (run / ck.DONE_RECORD).unlink()
    again = train_on_rows(str(tiny_llama), rows, _config(), run)
    assert again["resumed_from_epoch"] == 3 and again["final_loss"] == summary["final_loss"]
    assert (run / "epoch-3" / name).stat().st_mtime_ns == stamp and (run / ck.DONE_RECORD).exists()


def test_leftovers_of_a_kill_are_cleaned(tmp_path):
    root = tmp_path / "run"
    for epoch in (1, 2):
        path = ck.epoch_dir(root, epoch)
        path.mkdir(parents=True)
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                     "trainer_state.json"):
            (path / name).write_text("x")
    (root / ck.STAGING / "checkpoint-12").mkdir(parents=True)  # killed while saving epoch 3
    (root / "epoch-3.tmp-123").mkdir()
    (root / "sftlab_done.json.tmp-9").write_text("{")

    ck.clean_partial(root)
    epoch, resume = ck.resume_point(root)

    assert sorted(p.name for p in root.iterdir()) == ["epoch-1", "epoch-2"]
    assert (epoch, resume) == (2, ck.epoch_dir(root, 2))
    assert not (root / "epoch-1" / "optimizer.pt").exists()  # only the newest keeps it
    assert (root / "epoch-1" / "model.safetensors").exists()


@pytest.mark.slow
def test_two_processes_equal_one(tiny_llama, tmp_path):
    config = dict(method_type="full", learning_rate=1e-3, batch_size=8, epochs=2, logging_steps=1,
                  seed=7, micro_batch_size=2)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": str(tiny_llama), "rows": make_rows(), "config": config,
                                "out": str(tmp_path / "dp")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun_command(2, ["--rows", str(spec)]), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    train_on_rows(str(tiny_llama), make_rows(), TrainConfig.of(**config), tmp_path / "one")
    two = load_file(tmp_path / "dp" / "epoch-2" / "model.safetensors")
    one = load_file(tmp_path / "one" / "epoch-2" / "model.safetensors")
    base = load_file(tiny_llama / "model.safetensors")
    assert any(not torch.equal(one[k], base[k]) for k in base)
    diff = max((two[k] - one[k]).abs().max().item() for k in one)
    assert diff < 1e-5, f"2 processes vs 1: max abs diff {diff}"
