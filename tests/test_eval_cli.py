"""``sftlab eval`` / ``sftlab score`` end to end on a tiny model and local fixtures."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import write_benchmarks

from sftlab.cli import main

FIELDS = ["task", "shots", "format", "config", "version", "metric", "value", "stderr", "n",
          "outcomes"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def run_json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_eval_loglikelihood_and_generation_tasks(tiny_llama, data, tmp_path, capsys):
    out = tmp_path / "out"
    payload = run_json(capsys, ["eval", "--model", str(tiny_llama), "--task", "boolq:0,1",
                                "--task", "gsm8k:0", "--format", "lm-eval", "--data", str(data),
                                "--out", str(out), "--json"])
    results = payload["results"]
    assert list(payload) == ["results"]
    assert [(r["task"], r["shots"]) for r in results] == [("boolq", 0), ("boolq", 1), ("gsm8k", 0)]
    for r in results:
        assert list(r) == FIELDS
        assert r["n"] == 2 and r["format"] == "lm-eval" and 0 <= r["value"] <= 100
    assert results[2]["metric"] == "acc" and sum(results[2]["outcomes"].values()) == 2
    rows = [json.loads(x) for x in (out / "gsm8k-0shot-lm-eval.jsonl").read_text().splitlines()]
    assert {"item_id", "prompt_hash", "prompt", "output", "extracted", "correct", "score",
            "outcome"} <= set(rows[0])
    prov = json.loads((out / "boolq-1shot-lm-eval.provenance.json").read_text())
    assert prov["version"] == "2" and prov["backend"]["dtype"] == "float32"
    assert prov["config"] is None and all(r["config"] is None for r in results)  # lm-eval
    assert prov["versions"]["transformers"] and prov["seed"] == 1234
    assert prov["notes"]["fewshot_source"].startswith("train split")


def test_eval_with_template_is_recorded(tiny_llama, data, tmp_path, capsys):
    tpl = "###Question: {instruction}\n\n###Answer: {response}"
    run_json(capsys, ["eval", "--model", str(tiny_llama), "--task", "mmlu:0", "--data", str(data),
                      "--out", str(tmp_path), "--template", tpl, "--config", "ppl", "--json"])
    prov = json.loads((tmp_path / "mmlu-0shot-opencompass.provenance.json").read_text())
    assert prov["use_template"] is True and prov["template"] == tpl
    assert prov["config"] == "mmlu_ppl_ac766d" and prov["config_kind"] == "ppl"
    assert prov["template_mode"] == "instruction"
    row = json.loads((tmp_path / "mmlu-0shot-opencompass.jsonl").read_text().splitlines()[0])
    assert row["prompt"].startswith("###Question: The following") and row["output"] in "ABCD"


@pytest.mark.parametrize(("argv", "message"), [
    (["--task", "gsm9k"], "unknown task 'gsm9k'"),
    (["--task", "math:3"], "unsupported shot count 3"),
    (["--task", "gsm8k:x"], "shots must be integers"),
    (["--task", "mmlu", "--format", "helm"], "unknown format 'helm'"),
])
def test_eval_bad_input_exits_2_before_loading(argv, message, tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path / "no-model"), *argv, "--out", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ambiguous_data_folder_lists_candidates(tiny_llama, data, tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("gsm8k_test.jsonl", "gsm8k_test_v2.jsonl"):
        (folder / name).write_text((data / "gsm8k_test.jsonl").read_text())
    code = main(["eval", "--model", str(tiny_llama), "--task", "gsm8k:0", "--data", str(folder),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "gsm8k_test.jsonl, gsm8k_test_v2.jsonl" in err
    assert not (tmp_path / "o").exists()


def test_score_replay(data, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": 0, "output": "so #### 5"}) + "\n"
                     + json.dumps({"id": 1, "output": "I think 7"}) + "\n")
    payload = run_json(capsys, ["score", "--task", "gsm8k:0", "--data", str(data),
                                "--predictions", str(preds), "--format", "lm-eval", "--json"])
    [r] = payload["results"]
    assert list(r) == FIELDS and r["value"] == 50.0 and r["outcomes"] == {"parse_failure": 1,
                                                                          "pass": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 99, "output": "x"}) + "\n")
    code = main(["score", "--task", "gsm8k", "--data", str(data), "--predictions", str(bad)])
    assert code == 2 and "match no item" in capsys.readouterr().err


EIGHT = ["math", "gsm8k", "mbpp", "humaneval", "hellaswag", "nq_open", "boolq", "mmlu"]


def gold_outputs(task: str, fmt: str = "lm-eval") -> list[dict]:
    """Reference answers of the fixture items, as a model would have written them (the
    opencompass format's multiple-choice configs are generative: a letter)."""
    lettered = {"gsm8k": [(0, "7-2=5\n#### 5"), (1, "2*1200=2400\nThe answer is 2400")],
                "hellaswag": [(0, "A"), (1, "The answer is B.")], "boolq": [(0, "A"), (1, "B")],
                # OpenCompass left-strips the completion: a whole fenced function, as chat
                # models write it
                "humaneval": [("HumanEval/0", "```python\ndef inc(x):\n    return x + 1\n```"),
                              ("HumanEval/1", "```python\ndef sq(x):\n    return x * x\n```")]}
    if fmt == "opencompass" and task in lettered:
        return [{"id": i, "output": text} for i, text in lettered[task]]
    golds = {
        "math": [("test/algebra/1.json", "So $1+1=\\boxed{2}$."),
                 ("test/algebra/2.json", "The answer is $\\boxed{\\frac{1}{2}}$.")],
        "gsm8k": [(0, "7-2=5\n#### 5"), (1, "2*1200=2400\n#### 2,400")],
        "mbpp": [(11, "def double(x):\n    return 2 * x"), (12, "def neg(x):\n    return -x")],
        "humaneval": [("HumanEval/0", "    return x + 1\n"), ("HumanEval/1", "    return x * x\n")],
        "hellaswag": [(0, "starts to run."), (1, "paints a wall.")],
        "nq_open": [(0, "blue"), (1, "eight")],
        "boolq": [(0, "Yes"), (1, "No")],
        "mmlu": [(0, "A"), (1, "B"), (2, "C")],
    }
    return [{"id": i, "output": text} for i, text in golds[task]]


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
@pytest.mark.parametrize("task", EIGHT)
def test_score_gold_answers_of_every_task_in_both_formats(task, fmt, data, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in gold_outputs(task, fmt)))
    [r] = run_json(capsys, ["score", "--task", task, "--data", str(data), "--predictions",
                            str(preds), "--format", fmt, "--json"])["results"]
    assert (r["task"], r["format"], r["n"]) == (task, fmt, len(gold_outputs(task, fmt)))
    assert r["value"] == 100.0 and r["outcomes"] == {"pass": r["n"]}, r


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
def test_eval_runs_all_eight_tasks_in_one_model_load(tiny_llama, data, tmp_path, capsys, fmt):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(tiny_llama), "--data", str(data), "--format", fmt,
            "--limit", "1", "--max-new-tokens", "4", "--out", str(out), "--json"]
    for task in EIGHT:
        argv += ["--task", f"{task}:{ {'mbpp': 3, 'hellaswag': 1}.get(task, 0) }"]
    results = run_json(capsys, argv)["results"]
    assert [r["task"] for r in results] == EIGHT
    for r in results:
        assert r["n"] == 1 and sum(r["outcomes"].values()) == 1 and r["format"] == fmt
        stem = out / f"{r['task']}-{r['shots']}shot-{fmt}"
        [row] = [json.loads(x) for x in stem.with_suffix(".jsonl").read_text().splitlines()]
        assert row["outcome"] in ("pass", "fail", "parse_failure", "error", "timeout")
        prov = json.loads(stem.with_name(stem.name + ".provenance.json").read_text())
        assert prov["task"] == r["task"] and prov["version"] == r["version"]
        assert isinstance(prov["metrics"], dict)


def test_bad_data_of_any_task_fails_before_the_model_loads(data, tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("gsm8k_test.jsonl", "hellaswag_train.jsonl", "hellaswag_val.jsonl"):
        (folder / name).write_text((data / name).read_text())
    for name in ("boolq_dev.jsonl", "boolq_dev_v2.jsonl"):
        (folder / name).write_text((data / "boolq_dev.jsonl").read_text())
    # the model does not exist: only a check made before loading it can explain exit 2
    # with these messages, for the second and third tasks, all reported at once
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--data", str(folder),
                 "--task", "gsm8k:0", "--task", "boolq:0", "--task", "hellaswag:5",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "2 problems" in err
    assert f"{folder}: 2 files could be the 'validation' split: boolq_dev.jsonl" in err
    assert "only 1 few-shot examples available" in err and "cannot load model" not in err
    assert not (tmp_path / "o").exists()


def test_human_output_shows_progress_secondary_metrics_and_fewshot_source(
        tiny_llama, data, tmp_path, capsys):
    single = tmp_path / "nq_open_dev.jsonl"  # a single file: no few-shot split
    single.write_text((data / "nq_open_dev.jsonl").read_text())
    assert main(["eval", "--model", str(tiny_llama), "--data", str(data), "--task", "mmlu:0",
                 "--config", "ppl", "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr()
    assert main(["eval", "--model", str(tiny_llama), "--data", str(single), "--task", "nq_open:1",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "b")]) == 0
    second = capsys.readouterr()
    assert "[1/1] mmlu 0-shot (opencompass) ..." in first.err  # progress on stderr
    assert "mmlu 0-shot (opencompass): acc_norm=" in first.out and "weighted=" in first.out
    assert ("nq_open 1-shot (opencompass): few-shot examples from the evaluation split "
            "excluding the item itself") in second.out
    assert f"predictions: {tmp_path / 'b' / 'nq_open-1shot-opencompass.jsonl'}" in second.out
