"""Grid expansion: run counts follow the formula and run ids are honest content hashes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftlab.cli import main
from sftlab.study import plan, study_from_dict

ROOT = Path(__file__).resolve().parents[1]


def make_study(n_models=2, n_data=3, sizes=(10, 20), methods=("full", "lora"),
               settings=("single", "all", "leave_one_out"), **extra) -> dict:
    return {
        "name": "grid",
        "models": [{"name": f"m{i}", "path": f"org/model-{i}"} for i in range(n_models)],
        "datasets": [{"name": f"d{i}", "format": "alpaca", "path": f"d{i}.json"}
                     for i in range(n_data)],
        "grid": {"sizes": list(sizes), "methods": list(methods), "settings": list(settings)},
        "methods": {
            "full": {"learning_rate": 1e-5, "batch_size": 32, "epochs": 3},
            "lora": {"learning_rate": 2e-6, "batch_size": 128, "epochs": 2,
                     "lora": {"r": 8, "alpha": 16}},
            "dora": {"learning_rate": 2e-6, "batch_size": 128, "epochs": 2},
        },
        "evaluation": {"benchmarks": [{"task": "gsm8k", "shots": [0, 4]},
                                      {"task": "mmlu", "shots": 5}]},
        **extra,
    }


@pytest.mark.parametrize("n_models, n_data, sizes, methods, settings", [
    (1, 1, (5,), ("full",), ("single",)),
    (2, 3, (10, 20), ("full", "lora"), ("single", "all", "leave_one_out")),
    (3, 10, (1000, 20000), ("full", "lora"), ("single", "all", "leave_one_out")),
    (2, 4, (7,), ("lora", "dora"), ("all",)),
    (1, 5, (3, 4, 5), ("full",), ("single", "leave_one_out")),
])
def test_run_count_follows_formula(n_models, n_data, sizes, methods, settings):
    study = study_from_dict(make_study(n_models, n_data, sizes, methods, settings))
    p = plan(study)
    per_cell = sum({"single": n_data, "all": 1, "leave_one_out": n_data}[s] for s in settings)
    assert len(p.runs) == n_models * len(methods) * len(sizes) * per_cell
    assert len({r.id for r in p.runs}) == len(p.runs)
    epochs = {m: study.methods[m].epochs for m in methods}
    ckpts = sum(epochs[r.method] for r in p.runs)
    assert p.counts()["checkpoints"] == ckpts
    assert p.counts()["evaluations"] == (ckpts + n_models) * 3


def test_settings_choose_the_right_datasets():
    p = plan(study_from_dict(make_study(1, 3, (10,), ("full",))))
    by_setting = {}
    for r in p.runs:
        by_setting.setdefault(r.setting, []).append(r)
    assert sorted(r.datasets for r in by_setting["single"]) == [("d0",), ("d1",), ("d2",)]
    assert [r.datasets for r in by_setting["all"]] == [("d0", "d1", "d2")]
    loo = {r.left_out: r.datasets for r in by_setting["leave_one_out"]}
    assert loo == {"d0": ("d1", "d2"), "d1": ("d0", "d2"), "d2": ("d0", "d1")}
    # the same training set is shared by every model and method
    assert len(p.training_sets) == 3 + 1 + 3


def ids(raw: dict) -> dict:
    return {(r.model, r.method, r.setting, r.datasets, r.size): r.id
            for r in plan(study_from_dict(raw)).runs}


def test_ids_change_only_with_what_changes_results():
    base = make_study()
    reference = ids(base)

    same = copy.deepcopy(base)
    same["output_dir"] = "/elsewhere"
    same["methods"]["full"]["micro_batch_size"] = 2  # an execution detail
    same["methods"]["full"]["gradient_checkpointing"] = True
    same["methods"]["dora"]["learning_rate"] = 9.0  # a method not in the grid
    same["datasets"][0]["category"] = "renamed-category"
    assert ids(same) == reference

    lora_lr = copy.deepcopy(base)
    lora_lr["methods"]["lora"]["learning_rate"] = 3e-6
    changed = ids(lora_lr)
    for key, run_id in reference.items():
        assert (changed[key] != run_id) == (key[1] == "lora"), key

    seed = copy.deepcopy(base)
    seed["seed"] = 7
    assert not set(ids(seed).values()) & set(reference.values())

    data = copy.deepcopy(base)
    data["datasets"][1]["path"] = "other.json"
    changed = ids(data)
    for key, run_id in reference.items():
        assert (changed[key] != run_id) == ("d1" in key[3]), key


def test_ids_stable_across_processes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(make_study()))
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-m", "sftlab", "plan", str(path), "--json"],
                             capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
        outs.append(json.loads(out.stdout))
    assert outs[0]["runs"] == outs[1]["runs"]


def test_plan_json_shape(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(make_study()))
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["runs"] == 2 * 2 * 2 * 7 == len(data["runs"])
    assert {"id", "model", "method", "setting", "datasets", "size"} <= set(data["runs"][0])
    assert {"runs", "checkpoints", "evaluations"} <= set(data["counts"])


def test_paper_study_plans_252_runs(capsys):
    assert main(["plan", str(ROOT / "studies" / "paper.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["runs"] == 252
    assert data["counts"]["checkpoints"] == 2520
    # 10 benchmarks at the paper's shots: 18 (benchmark, shots) pairs
    assert data["counts"]["evaluations"] == (2520 + 3) * 18


def test_checkpoint_list_past_last_epoch_is_an_error():
    from sftlab.errors import UserError

    raw = make_study(evaluation={"checkpoints": [1, 5]})
    with pytest.raises(UserError, match="epoch 5 is past the last epoch"):
        plan(study_from_dict(raw))


def test_editing_a_local_source_changes_its_run_ids(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text('[{"instruction": "x", "input": "", "output": "y"}]')
    raw = make_study(1, 2, (1,), ("full",), ("single",))
    raw["datasets"] = [{"name": n, "format": "alpaca", "path": str(tmp_path / f"{n}.json")}
                       for n in ("a", "b")]
    before = ids(raw)
    (tmp_path / "a.json").write_text('[{"instruction": "x", "input": "", "output": "z"}]')
    after = ids(raw)
    for key, run_id in before.items():
        assert (after[key] != run_id) == ("d0" in key[3] or "a" in key[3]), key


def test_task_version_bump_changes_exactly_that_tasks_eval_ids(monkeypatch):
    """A changed prompt or scorer bumps the task's version; the eval ids of that task (and
    only those) change, so the driver re-runs exactly them and reuses the rest."""
    import dataclasses

    from sftlab.evaluate.tasks import registry

    study = study_from_dict(make_study(1, 1, (5,), ("full",), ("single",)))
    before = {e.id: e.task for e in plan(study).evaluations}
    monkeypatch.setitem(registry.TASKS, "gsm8k",
                        dataclasses.replace(registry.TASKS["gsm8k"], version="99"))
    after = {e.id: e.task for e in plan(study).evaluations}
    assert len(before) == len(after)
    changed = {t for i, t in before.items() if i not in after}
    kept = {t for i, t in before.items() if i in after}
    assert changed == {"gsm8k"} and kept == {"mmlu"}


def test_config_is_part_of_the_eval_id_and_recorded():
    base = make_study(1, 1, (5,), ("full",), ("single",))
    default = plan(study_from_dict(base)).evaluations
    assert {(e.task, e.shots, e.config) for e in default} == {
        ("gsm8k", 0, "gsm8k_0shot_gen_a58960"), ("gsm8k", 4, "gsm8k_gen_1d7fe4"),
        ("mmlu", 5, "mmlu_gen_4d595a")}
    ppl = copy.deepcopy(base)
    ppl["evaluation"]["benchmarks"][1]["config"] = "ppl"
    evals = plan(study_from_dict(ppl)).evaluations
    assert {e.config for e in evals if e.task == "mmlu"} == {"mmlu_ppl_ac766d"}
    assert {e.id for e in evals if e.task == "gsm8k"} == {e.id for e in default if e.task == "gsm8k"}
    assert not {e.id for e in evals if e.task == "mmlu"} & {e.id for e in default}
    # the same task twice with two configs: two evaluations
    both = copy.deepcopy(base)
    both["evaluation"]["benchmarks"].append({"task": "mmlu", "shots": 5, "config": "mmlu_ppl_ac766d"})
    assert len(plan(study_from_dict(both)).evaluations) == len(default) // 3 * 4  # 4 targets


def test_bad_config_names_its_key():
    from sftlab.errors import UserError

    bad = make_study(1, 1, (5,), ("full",), ("single",))
    bad["evaluation"]["benchmarks"][1]["config"] = "mmlu_zero_shot_gen_47e2c0"  # 0-shot only
    with pytest.raises((UserError, ValueError), match="covers 0-shot, not 5-shot"):
        study_from_dict(bad)
    bad["evaluation"]["benchmarks"][1].update(config="ppl", format="lm-eval")
    with pytest.raises((UserError, ValueError), match="only chosen in the opencompass format"):
        study_from_dict(bad)


def test_template_mode_is_part_of_the_eval_id():
    base = make_study(1, 1, (5,), ("full",), ("single",))
    rounds = copy.deepcopy(base)
    rounds["evaluation"]["template_mode"] = "rounds"
    a = {e.id for e in plan(study_from_dict(base)).evaluations}
    b = {e.id for e in plan(study_from_dict(rounds)).evaluations}
    assert not a & b
    off = copy.deepcopy(rounds)
    off["evaluation"]["use_template"] = False  # no template: the mode changes nothing
    off_base = copy.deepcopy(base)
    off_base["evaluation"]["use_template"] = False
    assert {e.id for e in plan(study_from_dict(off)).evaluations} == \
        {e.id for e in plan(study_from_dict(off_base)).evaluations}


def test_a_benchmark_limited_to_some_methods_evaluates_only_their_checkpoints():
    from sftlab.errors import UserError

    base = make_study(1, 1, (5,), ("full", "lora"), ("single",))
    everything = plan(study_from_dict(base)).evaluations
    only = copy.deepcopy(base)
    only["evaluation"]["benchmarks"][0]["methods"] = ["lora"]
    the_plan = plan(study_from_dict(only))
    runs = {r.id: r.method for r in the_plan.runs}
    gsm = [e for e in the_plan.evaluations if e.task == "gsm8k"]
    assert gsm and {runs.get(e.target) for e in gsm} == {"lora"}  # no base, no full runs
    assert len(gsm) == 2 * 2  # two shot counts x lora's two epochs
    mmlu = [e for e in the_plan.evaluations if e.task == "mmlu"]
    assert {e.id for e in mmlu} == {e.id for e in everything if e.task == "mmlu"}
    # it selects, it does not change a score: the lora evaluations keep their ids
    assert {e.id for e in gsm} <= {e.id for e in everything}
    bad = copy.deepcopy(base)
    bad["evaluation"]["benchmarks"][0]["methods"] = ["lroa"]
    with pytest.raises(UserError, match=r"evaluation\.benchmarks\[0\]\.methods\[0\].*'lora'"):
        study_from_dict(bad)
