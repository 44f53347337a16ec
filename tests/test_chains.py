"""Method chains: ``init:`` links, run ids that include the parent's, plan output,
scheduling parents before children, re-running only what a change touches, and
resuming after kill -9."""

from __future__ import annotations

import copy
import json
import signal
import sys
from pathlib import Path

import pytest
import yaml

from sftlab.cli import main
from sftlab.errors import UserError
from sftlab.study import plan, study_from_dict

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))


def chain_study(tmp_path: Path, **methods) -> dict:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("alpha beta gamma delta. " * 40)
    raw = {
        "name": "chain", "seed": 1, "output_dir": str(tmp_path / "out"),
        "models": [{"name": "model-a", "path": "tiny:llama"},
                   {"name": "model-b", "path": "tiny:qwen2"}],
        "datasets": [{"name": "alpaca", "format": "alpaca", "path": "embedded:alpaca_data.json"},
                     {"name": "gsm8k", "format": "jsonl", "path": "embedded:gsm8k_train.jsonl",
                      "fields": {"instruction": "question", "response": "answer"}}],
        "grid": {"sizes": [8], "methods": ["sft", "plain"]},
        "methods": {
            "cpt": {"learning_rate": 1e-3, "batch_size": 4, "epochs": 2, "adapter": "dora",
                    "data": {"format": "text", "path": str(corpus)}},
            "upscale": {"init": "cpt", "strategy": "llama_pro", "layers": 3},
            "sft": {"type": "full", "init": "upscale", "learning_rate": 1e-4, "batch_size": 4,
                    "epochs": 2},
            "plain": {"type": "lora", "learning_rate": 1e-3, "batch_size": 4, "epochs": 1},
        },
        "evaluation": {"benchmarks": [{"task": "gsm8k", "shots": [0], "limit": 5}]},
    }
    raw["methods"].update(methods)
    return raw


def by_key(raw: dict) -> dict:
    return {(r.model, r.method, r.datasets): r for r in plan(study_from_dict(raw)).runs}


def test_a_chain_plans_parents_first_with_their_ids_in_the_children(tmp_path):
    p = plan(study_from_dict(chain_study(tmp_path)))
    runs = {(r.model, r.method, r.datasets): r for r in p.runs}
    assert len(p.runs) == 2 * (1 + 1 + 2 + 2)  # per model: cpt, upscale, sft x 2 sets, plain x 2
    for model in ("model-a", "model-b"):
        cpt = runs[(model, "cpt", ("cpt",))]
        up = runs[(model, "upscale", ("cpt",))]
        assert cpt.parent is None and up.parent == cpt.id and up.data_key is None
        assert (cpt.weights, up.weights, cpt.checkpoints, up.checkpoints) == ("dora", "full",
                                                                              (1, 2), (1,))
        for data in ("alpaca", "gsm8k"):
            sft = runs[(model, "sft", (data,))]
            assert sft.parent == up.id and sft.chain == "cpt>upscale>sft"
            assert runs[(model, "plain", (data,))].parent is None
        order = [r.id for r in p.runs]
        assert order.index(cpt.id) < order.index(up.id) < order.index(
            runs[(model, "sft", ("alpaca",))].id)
    assert {ts.setting for ts in p.training_sets} == {"link", "single"}
    # every link's checkpoints are evaluated: cpt 2 + upscale 1 + sft 2x2 + plain 2x1, + base
    assert p.counts()["evaluations"] == 2 * (2 + 1 + 4 + 2 + 1)


def test_changing_a_parent_changes_its_descendants_ids_and_nothing_else(tmp_path):
    base = chain_study(tmp_path)
    before = by_key(base)
    changed = copy.deepcopy(base)
    changed["methods"]["cpt"]["learning_rate"] = 2e-3
    after = by_key(changed)
    moved = {k for k in before if before[k].id != after[k].id}
    assert moved == {k for k in before if k[1] in ("cpt", "upscale", "sft")}
    changed = copy.deepcopy(base)
    changed["methods"]["sft"]["learning_rate"] = 2e-4
    after = by_key(changed)
    assert {k for k in before if before[k].id != after[k].id} == {
        k for k in before if k[1] == "sft"}
    changed = copy.deepcopy(base)
    changed["methods"]["upscale"]["strategy"] = "opt_deus"
    after = by_key(changed)
    assert {k[1] for k in before if before[k].id != after[k].id} == {"upscale", "sft"}


@pytest.mark.parametrize("methods, expected", [
    ({"cpt": {"learning_rate": 1e-3, "batch_size": 4, "epochs": 1, "init": "sft",
              "data": {"format": "text", "path": "c.txt"}}},
     "methods.cpt.init: the chain cpt -> sft -> upscale -> cpt is a cycle"),
    ({"sft": {"type": "full", "init": "upscal", "learning_rate": 1e-4, "batch_size": 4,
              "epochs": 1}},
     "methods.sft.init: unknown method 'upscal' (did you mean 'upscale'?)"),
    ({"upscale": {"init": "cpt", "strategy": "llama_pro", "layers": 3, "epochs": 2}},
     "methods.upscale.epochs: unknown key 'epochs' (expected one of: type, init, data, strategy, layers)"),
    ({"upscale": {"init": "cpt", "strategy": "llama-pro", "layers": 3}},
     "methods.upscale.strategy: unknown value 'llama-pro' (did you mean 'llama_pro'?)"),
    ({"sft": {"type": "full", "init": "cpt", "learning_rate": 1e-4, "batch_size": 4,
              "epochs": 1, "trainable": "new"}},
     "methods.sft.trainable: `new` trains the layers an up-scaling added; start it from"),
    ({"plain": {"type": "lora", "learning_rate": 1e-3, "batch_size": 4, "epochs": 1,
                "trainable": "new"}},
     "methods.plain: `trainable: new` trains the new layers' full weights"),
])
def test_bad_chains_are_study_errors_with_their_key_path(tmp_path, methods, expected):
    with pytest.raises(UserError) as err:
        study_from_dict(chain_study(tmp_path, **methods))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_plan_shows_the_chain_and_each_runs_parent(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(chain_study(tmp_path)))
    assert main(["plan", str(path), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    ids = {r["id"] for r in runs}
    assert all(r["parent"] is None or r["parent"] in ids for r in runs)
    sft = next(r for r in runs if r["method"] == "sft")
    assert sft["chain"] == "cpt>upscale>sft" and sft["checkpoints"] == ["epoch-1", "epoch-2"]
    assert main(["plan", str(path)]) == 0
    table = capsys.readouterr().out
    assert "parent" in table and "cpt>upscale>sft" in table and sft["parent"] in table


def _fake_run(raw: dict):
    from test_orchestrate import run_fake

    study = study_from_dict(raw)
    return study, run_fake(study)


def test_the_orchestrator_runs_parents_first_and_reruns_only_what_changed(tmp_path):
    from test_orchestrate import stored

    raw = chain_study(tmp_path)
    study, summary = _fake_run(raw)
    assert summary["failed"] == 0 and summary["stages"]["train"]["done"] == 12
    p = plan(study)
    ckpt = Path(study.out_dir) / "ckpt"
    written = {r.id: (ckpt / r.id / "epoch-1" / "weights.json").stat().st_mtime_ns
               for r in p.runs}
    for r in p.runs:  # a child's first checkpoint was written after its parent's last one
        if r.parent:
            parent = p.run_index[r.parent]
            assert (ckpt / r.id / "epoch-1" / "weights.json").stat().st_mtime_ns >= \
                (ckpt / parent.id / f"epoch-{parent.epochs}" / "weights.json").stat().st_mtime_ns
    store = stored(study)
    labels = {r["method"] for r in store.results()}
    store.close()
    assert labels == {"base", "cpt", "cpt>upscale", "cpt>upscale>sft", "plain"}
    raw["methods"]["upscale"]["strategy"] = "opt_deus"
    study2, summary2 = _fake_run(raw)
    assert summary2["stages"]["train"]["done"] == 12
    p2 = plan(study2)
    retrained = [r for r in p2.runs if r.id not in written]
    assert sorted({r.method for r in retrained}) == ["sft", "upscale"] and len(retrained) == 6
    for r in p2.runs:
        if r.id in written:  # the rest was not touched
            assert (ckpt / r.id / "epoch-1" / "weights.json").stat().st_mtime_ns == written[r.id]


def test_a_chain_resumes_after_kill_9_and_ends_as_an_uninterrupted_run(tmp_path):
    from test_crash import _drive, _results

    def study_file(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        raw = {**chain_study(tmp_path), "output_dir": str(tmp_path / name)}
        path.write_text(yaml.safe_dump(raw))
        return path

    reference = study_file("reference")
    assert _drive(tmp_path, reference).returncode == 0
    crashing = study_file("crashing")
    for _ in range(2):  # killed while a (parent, then child) training job is mid-way
        proc = _drive(tmp_path, crashing, SFTLAB_CRASH_AT="start:train",
                      SFTLAB_CRASH_DELAY="0.5", FAKE_SLOW="train=2")
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    proc = _drive(tmp_path, crashing)
    assert proc.returncode == 0 and "failed 0" in proc.stdout, proc.stderr[-2000:]
    assert _results(crashing) == _results(reference)


def test_a_methods_own_data_is_prepared_whole_and_rendered(tmp_path):
    from sftlab.data.prepare import prepare

    rows = [{"instruction": f"say {i}", "input": "", "output": f"{i}!"} for i in range(5)]
    (tmp_path / "own.json").write_text(json.dumps(rows))
    raw = chain_study(tmp_path, own={"type": "lora", "learning_rate": 1e-3, "batch_size": 4,
                                     "epochs": 1, "init": "cpt",
                                     "data": {"format": "alpaca", "path": str(tmp_path / "own.json")}})
    raw["grid"]["methods"] = ["own"]
    study = study_from_dict(raw)
    p = plan(study)
    [own_a, own_b] = [r for r in p.runs if r.method == "own"]
    assert own_a.data_key == own_b.data_key and own_a.datasets == ("own",)
    prepare(study, progress=False)
    data = Path(study.out_dir) / "data"
    lines = [json.loads(x) for x in (data / f"{own_a.data_key}.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in lines] == [f"{i}!" for i in range(5)]
    assert lines[0]["prompt"] == "###Question: say 0\n\n###Answer: "
    cpt = next(r for r in p.runs if r.method == "cpt")
    docs = [json.loads(x) for x in (data / f"{cpt.data_key}.jsonl").read_text().splitlines()]
    assert len(docs) == 1 and docs[0]["text"].startswith("alpha beta")
    # no grid method trains on the grid's datasets: none of them was prepared
    assert sorted(p.name for p in data.glob("*.jsonl")) == sorted(
        f"{k}.jsonl" for k in {own_a.data_key, cpt.data_key})


def test_train_one_run_prepares_its_data_and_trains_its_parent_links_first(tmp_path, capsys):
    """`sftlab train --run` on a child: the up-scaling link first, then only the new layers
    of the up-scaled model train (`trainable: new`); the others stay bit-identical."""
    import torch
    from safetensors.torch import load_file

    raw = chain_study(tmp_path, sft={"type": "full", "init": "upscale", "learning_rate": 5e-3,
                                     "batch_size": 4, "epochs": 1, "trainable": "new"},
                      upscale={"strategy": "llama_pro", "layers": 3})
    raw["models"] = raw["models"][:1]
    raw["datasets"] = raw["datasets"][:1]
    raw["grid"]["methods"] = ["sft"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    p = plan(study_from_dict(raw))
    [up] = [r for r in p.runs if r.method == "upscale"]
    [sft] = [r for r in p.runs if r.method == "sft"]
    assert up.parent is None and sft.parent == up.id
    assert main(["train", str(path), "--run", sft.id, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["run_id"] for x in lines] == [up.id, sft.id]
    ckpt = tmp_path / "out" / "ckpt"
    before = load_file(ckpt / up.id / "epoch-1" / "model.safetensors")
    after = load_file(ckpt / sft.id / "epoch-1" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.2.") for k in changed)  # the new layer
