"""Synthetic data (`sftlab synth`, `format: synth`) against a scripted server on loopback.

The scripted world: 2 topics x 2 levels, 3 problems each. Each planted row fails
exactly one filter, so every column of the funnel is known:

- algebra/1: #1 is malformed JSON; #0 is first answered with a non-OpenAI body (retried)
- algebra/2: #1 is scored 3 by the judge; #2 gets a 500 first (retried)
- geometry/1: #1 is a near-duplicate of #0; #2 is too easy (4/4 re-solves agree)
- geometry/2: #0 is an evaluation item copied verbatim; #1 gets a 429 with Retry-After
  first, then no re-solve reaches its answer (0/4); #2 gets an unreadable verdict
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from synth_server import Reply, ScriptedServer

from sftlab.cli import main
from sftlab.data.sampling import derive_seed
from sftlab.errors import UserError
from sftlab.synth.pipeline import run_synth
from sftlab.synth.spec import STAGES, load_spec, parse_spec

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]
EVAL_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether in April and May?")
RECT = "A rectangle has a length of 8 meters and a width of 5 meters. What is its area in square"
PLANTED = {  # (topic, level, sample) -> (problem, answer) or "malformed"
    ("algebra", "1", 0): ("A baker sells muffins for 3 dollars each and sold 7 of them on Monday. "
                          "How many dollars did the baker earn?", "21"),
    ("algebra", "1", 1): "malformed",
    ("algebra", "1", 2): ("Solve for x when two times x plus four equals ten.", "3"),
    ("algebra", "2", 0): ("Find the positive root of the equation x squared minus nine equals "
                          "zero.", "3"),
    ("algebra", "2", 1): ("Is this even a question about numbers or about something else?", "7"),
    ("algebra", "2", 2): ("What is the sum of the first ten positive integers?", "55"),
    ("geometry", "1", 0): (RECT + " meters?", "40"),
    ("geometry", "1", 1): (RECT + " metres?", "40"),
    ("geometry", "1", 2): ("How many degrees do the interior angles of a triangle add up to?",
                           "180"),
    ("geometry", "2", 0): (EVAL_QUESTION, "72"),
    ("geometry", "2", 1): ("A circle has a radius of 3 units. What is its circumference divided "
                           "by pi?", "6"),
    ("geometry", "2", 2): ("A square has a perimeter of 20 centimeters. How long is one side?",
                           "5"),
}
FAULTS = {("algebra", "1", 0): Reply(raw="<html>busy</html>"),
          ("algebra", "2", 2): Reply(500, "overloaded"),
          ("geometry", "2", 1): Reply(429, "slow down", {"Retry-After": "0"})}
LOW_SCORE = {PLANTED[("algebra", "2", 1)][0]}
UNREADABLE_VERDICT = {PLANTED[("geometry", "2", 2)][0]}
ALL_SOLVE = {PLANTED[("geometry", "1", 2)][0]}
NONE_SOLVE = {PLANTED[("geometry", "2", 1)][0]}
EXPECTED = {  # (topic, level) -> funnel counts in STAGES order
    ("algebra", "1"): [3, 2, 2, 2, 2, 2, 2],
    ("algebra", "2"): [3, 3, 2, 2, 2, 2, 2],
    ("geometry", "1"): [3, 3, 3, 2, 1, 1, 1],
    ("geometry", "2"): [3, 3, 2, 1, 1, 0, 0],
}
SEEDS = {derive_seed(0, i) % 2**31: i for i in range(64)}
GEN = re.compile(r"Write a (\w+) problem at level (\d+)\.")


def scripted(body: dict, attempt: int) -> str | Reply:
    """The scripted generator, judge and re-solver (one server plays all three)."""
    user = body["messages"][-1]["content"]
    if (m := GEN.match(user)):
        key = (m.group(1), m.group(2), SEEDS[body["seed"]])
        if attempt == 1 and key in FAULTS:
            return FAULTS[key]
        planted = PLANTED.get(key, (f"Generic {key[0]} exercise number {key[2]} at level "
                                    f"{key[1]}: add {key[2]} and {key[2]}.", str(2 * key[2])))
        if planted == "malformed":
            return '{"problem": "What is 2 + 2?", "reasoning": "2 + 2 = 4", "answer": '
        problem, answer = planted
        return json.dumps({"problem": problem, "reasoning": f"Work it out: {answer}.",
                           "answer": answer})
    if "Stated answer:" in user:
        problem = user.split("Problem:\n", 1)[1].split("\n\nStated answer:", 1)[0]
        if problem in UNREADABLE_VERDICT:
            return "Hard to say, really."
        score = 3 if problem in LOW_SCORE else 9
        return json.dumps({"well_posed": True, "answer_consistent": True, "score": score,
                           "reason": "scripted"})
    problem = user.split("\n\n", 1)[1]
    answer = next((a for p, a in (v for v in PLANTED.values() if v != "malformed")
                   if p == problem), None)
    if answer is None:  # a generic exercise: "... add k and k."
        k = int(re.search(r"add (\d+) and", problem).group(1))
        answer = str(2 * k)
    right = problem in ALL_SOLVE or (problem not in NONE_SOLVE and body["seed"] < 3)
    return f"Step by step. The answer is \\boxed{{{answer if right else '999'}}}."


@pytest.fixture(scope="module")
def server():
    with ScriptedServer(scripted) as s:
        yield s


def spec_dict(url: str, **over) -> dict:
    endpoint = {"base_url": url, "model": "scripted", "concurrency": 4, "max_retries": 3,
                "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 10}
    raw = {
        "conditions": {"topic": ["algebra", "geometry"], "level": [1, 2]},
        "per_condition": 3,
        "prompt": "Write a {topic} problem at level {level}.",
        "generator": {**endpoint, "temperature": 0.8},
        "judge": {**endpoint, "model": "scripted-judge", "threshold": 7},
        "resolve": {"n": 4, "min_pass": 0.5, "max_pass": 0.75},
        "dedupe": {"threshold": 0.7},
        "decontaminate": {"files": ["eval.jsonl"], "ngram": 13},
    }
    for key, value in over.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return raw


def write_spec(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": EVAL_QUESTION.upper(), "answer": "72"},
            {"question": "An unrelated evaluation question about trains leaving two stations."}]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "synth.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_yield(path: Path) -> tuple[list[str], dict]:
    with path.open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    return reader.fieldnames, {(r["topic"], r["level"]): [int(r[s]) for s in STAGES]
                               for r in rows}


def test_funnel_is_exact_per_condition_and_a_second_run_asks_nothing(server, tmp_path, capsys):
    server.reset()
    spec = write_spec(tmp_path, spec_dict(server.url))
    out = tmp_path / "out"
    assert main(["synth", str(spec), "--out", str(out), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert {s: totals[s] for s in STAGES} == dict(zip(STAGES, [12, 11, 9, 7, 6, 5, 5], strict=True))
    assert totals["complete"] and totals["failed_requests"] == 0
    columns, funnel = read_yield(out / "yield.csv")
    assert columns == ["topic", "level", *STAGES]
    assert funnel == EXPECTED
    # the faults were retried: the garbage body, the 500 and the 429 each asked twice
    assert sorted(server.attempts.values()).count(2) == 3
    assert max(server.attempts.values()) == 2

    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    problems = {r["problem"] for r in rows}
    kept = {PLANTED[k][0] for k in [("algebra", "1", 0), ("algebra", "1", 2), ("algebra", "2", 0),
                                    ("algebra", "2", 2), ("geometry", "1", 0)]}
    assert problems == kept  # no duplicate, no eval copy, no rejected, no unparsable row
    baker = next(r for r in rows if r["problem"].startswith("A baker"))
    assert baker["instruction"] == baker["prompt"] == baker["problem"]
    assert baker["response"].endswith("\\boxed{21}$.") and baker["answer"] == "21"
    prov = baker["provenance"]
    assert prov["condition"] == {"topic": "algebra", "level": 1}
    assert prov["generator"]["model"] == "scripted"
    assert prov["judge"]["score"] == 9 and prov["judge"]["model"] == "scripted-judge"
    assert prov["resolve"]["answers"] == ["21", "21", "21", "999"]
    assert prov["resolve"]["passes"] == 3 and prov["resolve"]["pass_rate"] == 0.75

    data_before = (out / "data.jsonl").read_bytes()
    server.reset()
    assert main(["synth", str(spec), "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert server.asked() == 0 and again["requests"]["requests"] == 0
    assert again["requests"]["cache_hits"] > 0
    assert (out / "data.jsonl").read_bytes() == data_before


@pytest.mark.parametrize("change, expected", [
    ({"judge": {"threshold": 2}}, [12, 11, 10, 8, 7, 6, 6]),  # the score-3 row passes the judge
    ({"resolve": {"max_pass": 1.0}}, [12, 11, 9, 8, 7, 6, 6]),  # the too-easy row stays
    ({"resolve": {"min_pass": 0.0}}, [12, 11, 9, 8, 7, 6, 6]),  # the 0/4 row stays
    ({"dedupe": None, "decontaminate": None}, [12, 11, 9, 7, 7, 7, 7]),
    ({"judge": None, "resolve": None}, [12, 11, 11, 11, 10, 9, 9]),
])
def test_each_filter_setting_moves_exactly_its_rows(server, tmp_path, change, expected):
    spec = parse_spec(spec_dict(server.url, **change))
    write_spec(tmp_path, {})
    result = run_synth(spec, tmp_path / "out", base_dir=tmp_path)
    assert [result.totals[s] for s in STAGES] == expected


def test_a_request_failing_past_its_retries_is_counted_and_asked_again(tmp_path, capsys):
    healed = {"yes": False}

    def flaky(body, attempt):
        if not healed["yes"] and SEEDS[body["seed"]] == 1:
            return Reply(503, "down")
        return json.dumps({"problem": f"Problem with seed {body['seed']} about apples and "
                                      "oranges in a basket?", "reasoning": "r", "answer": "1"})

    with ScriptedServer(flaky) as srv:
        raw = spec_dict(srv.url, judge=None, resolve=None, decontaminate=None, per_condition=2)
        raw["generator"]["max_retries"] = 1
        spec = write_spec(tmp_path, raw)
        out = tmp_path / "out"
        assert main(["synth", str(spec), "--out", str(out), "--json"]) == 1
        first = json.loads(capsys.readouterr().out)
        assert first["generated"] == 4 and first["failed_requests"] == 4
        assert not first["complete"]
        assert json.loads((out / "summary.json").read_text())["complete"] is False
        healed["yes"] = True
        srv.reset()
        assert main(["synth", str(spec), "--out", str(out), "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["generated"] == 8 and second["complete"]
        assert srv.asked() == 4  # only the four that had failed


def test_kill_9_then_resume_never_reasks_an_answered_request(tmp_path):
    def slow(body, attempt):
        i = SEEDS[body["seed"]]
        topic, level = GEN.match(body["messages"][0]["content"]).groups()
        return json.dumps({"problem": f"Exercise {i} for {topic} at level {level}: how many "
                                      f"apples are in {i} baskets of two?",
                           "reasoning": "count", "answer": str(2 * i)})

    from sftlab.evaluate.judge import JudgmentCache

    with ScriptedServer(slow, latency=0.05) as srv:
        raw = spec_dict(srv.url, judge=None, resolve=None, dedupe=None, decontaminate=None,
                        per_condition=20)
        raw["generator"]["concurrency"] = 2
        spec = write_spec(tmp_path, raw)
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "sftlab", "synth", str(spec), "--out", str(out), "--json"]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while srv.asked() < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cache = JudgmentCache(out / "cache.sqlite")
        answered = len(cache)
        assert 0 < answered < 80 and not (out / "summary.json").exists()
        first_bodies = {json.dumps(b, sort_keys=True) for b in srv.bodies}
        srv.reset()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["generated"] == 80 and result["requests"]["cache_hits"] == answered
        assert srv.asked() == 80 - answered  # every answered request came from the cache
        in_flight = {json.dumps(b, sort_keys=True) for b in srv.bodies} & first_bodies
        assert len(in_flight) <= 2  # at most the requests in flight at the kill (concurrency)
        resumed = (out / "data.jsonl").read_bytes()
        fresh = run_synth(parse_spec(raw), tmp_path / "fresh", base_dir=tmp_path)
        assert fresh.totals["kept"] == 80
        assert (tmp_path / "fresh" / "data.jsonl").read_bytes() == resumed


def test_spec_errors_name_key_and_line(tmp_path):
    bad = {"conditions": {"topic": ["a", "b"]}, "per_condition": 2,
           "prompt": "Write about {topc}.",
           "generator": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
           "judge": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "thresold": 7},
           "resolve": {"n": 2, "min_pass": 0.9, "max_pass": 0.5}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(UserError) as err:
        load_spec(path)
    text = str(err.value)
    assert re.search(r"bad\.yaml:\d+: judge\.thresold: unknown key 'thresold' \(did you mean "
                     r"'threshold'\?\)", text)
    assert "'{topc}' is not a condition" in text
    assert "min_pass (0.9) is above max_pass (0.5)" in text
    assert main(["synth", str(path), "--out", str(tmp_path / "o")]) == 2


def test_example_synth_spec_is_valid():
    spec = load_spec(REPO / "examples" / "synth" / "math.yaml")
    assert spec.grid_size() >= 2 and spec.judge is not None and spec.resolve is not None


# --- format: synth in a study ----------------------------------------------------------


def synth_study(tmp_path: Path, model: Path, synth: dict, **dataset) -> dict:
    bench = tmp_path / "gsm8k_test.jsonl"  # the study's evaluation set: holds the planted copy
    bench.write_text(json.dumps({"question": EVAL_QUESTION, "answer": "#### 72"}) + "\n")
    return {
        "name": "synth-study", "seed": 3, "output_dir": str(tmp_path / "study"),
        "max_length": 256, "models": [{"name": "tiny", "path": str(model)}],
        "datasets": [{"name": "synthetic", "format": "synth", "category": "math",
                      "synth": synth, **dataset}],
        "grid": {"sizes": [4], "methods": ["full"], "settings": ["single"]},
        "methods": {"full": {"learning_rate": 1e-3, "batch_size": 2, "epochs": 1}},
        "evaluation": {"include_base": False,
                       "benchmarks": [{"task": "gsm8k", "data": str(bench)}]},
    }


def test_study_plans_without_asking_then_prepares_the_generated_set(server, tmp_path,
                                                                    tiny_llama):
    from sftlab.data.prepare import prepare
    from sftlab.study import plan, study_from_dict

    synth = spec_dict(server.url, decontaminate={"files": []})  # the benchmark file only
    raw = synth_study(tmp_path, tiny_llama, synth)
    server.reset()
    study = study_from_dict(raw)
    the_plan = plan(study)
    assert server.asked() == 0 and len(the_plan.runs) == 1  # planning contacts no one

    report = prepare(study, progress=False)
    assert server.asked() > 0
    (source,) = report.sources
    assert source.read == 5 and source.kept == 5  # the funnel's kept rows, the eval copy gone
    (folder,) = [p for p in (tmp_path / "study" / "synth").iterdir() if p.is_dir()]
    assert read_yield(folder / "yield.csv")[1] == EXPECTED
    rows = [json.loads(line) for line in Path(report.training_sets[0].path).read_text()
            .splitlines()]
    assert len(rows) == 4 and all("\\boxed{" in r["response"] for r in rows)
    assert all(r["instruction"] in {v[0] for v in PLANTED.values() if v != "malformed"}
               for r in rows)

    server.reset()
    assert prepare(study, progress=False).cached and server.asked() == 0

    from types import SimpleNamespace

    from sftlab.report.synth_funnel import synth_funnel_section

    section = synth_funnel_section(SimpleNamespace(
        options=SimpleNamespace(predictions_root=tmp_path / "study")))
    (table,) = section.tables
    assert "5 of 12 generated rows kept" in table.caption
    assert list(table.display.iloc[-1]) == ["total", "", "12", "11", "9", "7", "6", "5", "5"]

    # transport keys do not change run ids; a filter setting does (and re-filters the cache)
    faster = {**synth, "generator": {**synth["generator"], "concurrency": 16}}
    assert plan(study_from_dict(synth_study(tmp_path, tiny_llama, faster))).runs[0].id \
        == the_plan.runs[0].id
    looser = {**synth, "resolve": {**synth["resolve"], "max_pass": 1.0}}  # keeps the too-easy row
    study2 = study_from_dict(synth_study(tmp_path, tiny_llama, looser))
    assert plan(study2).runs[0].id != the_plan.runs[0].id
    assert prepare(study2, progress=False).sources[0].kept == 6 and server.asked() == 0


def test_study_dataset_can_point_at_a_spec_file_and_errors_name_the_key(server, tmp_path,
                                                                        tiny_llama):
    from sftlab.study import plan, study_from_dict

    spec = write_spec(tmp_path / "spec", spec_dict(server.url))
    raw = synth_study(tmp_path, tiny_llama, None, path=str(spec))
    del raw["datasets"][0]["synth"]
    assert len(plan(study_from_dict(raw)).runs) == 1

    with pytest.raises(UserError) as err:
        study_from_dict({**raw, "datasets": [{"name": "s", "format": "synth"}]})
    assert "needs either `path` (a synth spec file) or `synth`" in str(err.value)
    bad = spec_dict(server.url, judge={"thresold": 3})
    with pytest.raises(UserError) as err:
        study_from_dict(synth_study(tmp_path, tiny_llama, bad))
    assert "datasets[0].synth: judge.thresold: unknown key 'thresold'" in str(err.value)


@pytest.mark.slow
def test_run_trains_on_the_generated_set(server, tmp_path, tiny_llama):
    from sftlab.orchestrate import run_study
    from sftlab.study import study_from_dict

    raw = synth_study(tmp_path, tiny_llama, spec_dict(server.url, decontaminate={"files": []}))
    raw["evaluation"] = {"include_base": False, "benchmarks": []}
    summary = run_study(study_from_dict(raw), progress=False)
    assert summary["failed"] == 0
    assert summary["stages"]["train"]["done"] == 1
    (run_dir,) = (tmp_path / "study" / "ckpt").iterdir()
    assert (run_dir / "epoch-1").is_dir()


def test_example_study_with_a_synth_source_plans_offline():
    from sftlab.study import load_study, plan
    from sftlab.synth.study import benchmark_files, spec_of

    study = load_study(REPO / "examples" / "synthetic_math.yaml")
    spec, _ = spec_of(study, study.datasets[0])
    assert spec.generator.concurrency == 32
    assert [p.name for p in benchmark_files(study)] == ["gsm8k_test.jsonl"]
    assert len(plan(study).runs) == 2


def test_smoke_keeps_a_synth_source_only_when_its_generator_answers(server, tmp_path,
                                                                    tiny_llama):
    from sftlab.smoke import smoke_study
    from sftlab.study import study_from_dict

    live = study_from_dict(synth_study(tmp_path, tiny_llama, spec_dict(server.url)))
    assert smoke_study(live).datasets[0].format == "synth"
    dead = study_from_dict(synth_study(tmp_path, tiny_llama, spec_dict("http://127.0.0.1:9/v1")))
    stand_in = smoke_study(dead).datasets[0]
    assert stand_in.format == "jsonl" and stand_in.name == "synthetic"


def test_synth_spec_refuses_yaml_aliases(tmp_path):
    from sftlab.errors import UserError
    from sftlab.synth.spec import load_spec

    spec = tmp_path / "bomb.yaml"
    spec.write_text("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n")
    with pytest.raises(UserError, match="alias"):
        load_spec(spec)
