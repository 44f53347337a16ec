"""``sftlab prompts``: exactly what the backend receives, from the evaluation's code path."""

from __future__ import annotations

import json

import pytest
import yaml
from eval_fixtures import write_benchmarks

from sftlab.cli import main
from sftlab.evaluate.tasks.base import TaskContext, get_task


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def prompts(capsys, argv):
    assert main(["prompts", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_generation_and_likelihood_rows(data, capsys):
    out = prompts(capsys, ["--task", "mmlu:0", "--data", str(data)])
    assert out["config"] == "mmlu_zero_shot_gen_47e2c0"
    rows = out["prompts"]
    assert [r["id"] for r in rows] == ["0", "1", "2"]  # strings: row indices of the test split
    _, queries = get_task("mmlu").build(TaskContext(shots=0, data=str(data)))
    assert [r["prompt"] for r in rows] == [q.prompt for q in queries]
    assert rows[0]["stop"] == [] and rows[0]["max_new_tokens"] == 256 and "choices" not in rows[0]
    ppl = prompts(capsys, ["--task", "mmlu:0", "--data", str(data), "--config", "ppl",
                           "--limit", "1"])
    assert ppl["config"] == "mmlu_ppl_ac766d" and len(ppl["prompts"]) == 1
    assert ppl["prompts"][0]["choices"] == [" A", " B", " C", " D"]
    mbpp = prompts(capsys, ["--task", "mbpp:3", "--data", str(data), "--format", "lm-eval"])
    assert [r["id"] for r in mbpp["prompts"]] == ["11", "12"]  # the benchmark's own ids
    assert mbpp["config"] is None and mbpp["prompts"][0]["stop"] == ["[DONE]"]


def test_out_file_and_study_settings(data, tmp_path, capsys):
    study = {
        "name": "s", "template": "###Question: {instruction}\n\n###Answer: {response}",
        "models": [{"name": "m", "path": "org/m"}],
        "datasets": [{"name": "d", "format": "alpaca", "path": "d.json"}],
        "grid": {"sizes": [5], "methods": ["full"], "settings": ["single"]},
        "methods": {"full": {"learning_rate": 1e-5, "batch_size": 8, "epochs": 1}},
        "evaluation": {"benchmarks": [{"task": "boolq", "shots": [0], "config": "ppl",
                                       "data": str(data / "boolq_dev.jsonl"), "limit": 1}]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = prompts(capsys, ["--task", "boolq:0", "--study", str(path)])
    assert out["config"] == "SuperGLUE_BoolQ_ppl_314b96" and len(out["prompts"]) == 1
    assert out["prompts"][0]["prompt"] == (
        "###Question: Grass is green.\nQuestion: is grass green?\n\n###Answer: ")
    rounds = prompts(capsys, ["--task", "nq_open:1", "--data", str(data), "--study", str(path),
                              "--template-mode", "rounds", "--limit", "1"])
    assert rounds["template_mode"] == "rounds"
    assert rounds["prompts"][0]["prompt"].endswith("?\n\n###Answer: ")
    target = tmp_path / "p.jsonl"
    assert main(["prompts", "--task", "nq_open:1", "--data", str(data), "--out", str(target)]) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert rows[0]["stop"] == ["Q:", "\n"] and rows[0]["max_new_tokens"] == 50


def test_bad_config_exits_2(data, capsys):
    assert main(["prompts", "--task", "hellaswag:0", "--data", str(data),
                 "--config", "hellaswag_10shot_gen_e42710"]) == 2
    assert "not 0-shot" in capsys.readouterr().err
