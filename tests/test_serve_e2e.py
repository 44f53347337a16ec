"""End to end: a real ``sftlab serve`` process with a tiny model on loopback, driven over
HTTP by the ``openai`` backend (the model under test) and by the judge client (the same
served model as judge), for MT-Bench and AlpacaEval 2 with a small limit.

A tiny random model's judgments almost never parse: they must be counted as missing
(never scored as 0) and the run must complete.
"""

from __future__ import annotations

import json
import math
import socket

import httpx
import pytest

from sftlab.evaluate.backends.openai import OpenAIBackend
from sftlab.evaluate.judge import JudgeClient, JudgmentCache
from sftlab.evaluate.tasks.alpaca_eval import parse_preference
from sftlab.evaluate.tasks.base import TaskContext, get_task
from sftlab.evaluate.tasks.mt_bench import parse_rating
from sftlab.serve.process import ServerProcess

TEMPLATE = "###Question: {instruction}\n\n###Answer: {response}"


@pytest.fixture(scope="module")
def server(tiny_llama):
    proc = ServerProcess(["--model", str(tiny_llama), "--port", "0", "--name", "tiny",
                          "--template", TEMPLATE]).start()
    yield proc
    proc.stop()


def test_server_binds_loopback_and_speaks_openai(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{server.url}/models", timeout=30).json()["data"][0]["id"] == "tiny"
    chat = httpx.post(f"{server.url}/chat/completions", timeout=60, json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] >= 1
    bad = httpx.post(f"{server.url}/completions", json={"prompt": 3}, timeout=30)
    assert bad.status_code == 400 and "error" in bad.json()


def _options(server, tmp_path):
    return {"judge": {"base_url": server.url, "model": "tiny", "max_tokens": 12,
                      "max_retries": 1, "backoff_base": 0.01, "timeout": 60},
            "judge_cache": str(tmp_path / "judgments.sqlite"), "max_new_tokens": 12,
            "n_bootstrap": 20}


def test_judge_client_against_the_served_model(server, tmp_path):
    cache = JudgmentCache(tmp_path / "c.sqlite")
    with JudgeClient(server.url, "tiny", cache=cache, max_tokens=8) as judge:
        convs = [[{"role": "user", "content": f"Rate answer {i}: [[rating]]"}] for i in range(4)]
        first = judge.judge_many(convs)
        again = judge.judge_many(convs)
    assert all(j.text is not None and not j.cached for j in first)
    assert [j.text for j in again] == [j.text for j in first] and all(j.cached for j in again)
    assert judge.stats["requests"] == 4 and len(cache) == 4


def _check_missing_consistency(out, parse):
    for row in out.rows:
        if row["outcome"] == "error":  # judge unreachable / prompt too long for the tiny model
            assert row["score"] is None and row["judge_error"]
        else:
            assert row["judgment"] is not None
            parsed = parse(row["judgment"])
            assert (row["score"] is None) == (parsed is None)
            assert row["outcome"] == ("missing" if parsed is None else row["outcome"])
    missing = sum(r["score"] is None for r in out.rows)
    assert out.extra["n_missing"] == missing and out.n == len(out.rows) - missing
    assert missing > 0  # a random model's judgments rarely parse ...
    assert out.outcomes.get("missing", 0) > 0  # ... and those are counted as missing


@pytest.mark.shared_data
def test_mt_bench_end_to_end_over_http(server, shared_data, tmp_path):
    backend = OpenAIBackend("tiny", base_url=server.url, max_retries=1, backoff=0.01)
    ctx = TaskContext(shots=0, data=str(shared_data), limit=2, template=TEMPLATE,
                      options=_options(server, tmp_path))
    out = get_task("mt_bench").run(backend, ctx)
    assert len(out.rows) == 4 and {r["item_id"] for r in out.rows} == {
        "81/turn1", "81/turn2", "82/turn1", "82/turn2"}
    assert all(r["output"] is not None and r["prompt"].startswith("###Question:")
               for r in out.rows)
    _check_missing_consistency(out, parse_rating)
    rated = [r["score"] for r in out.rows if r["score"] is not None]
    assert (math.isnan(out.value) if not rated else out.value == pytest.approx(
        sum(rated) / len(rated)))


def test_alpaca_eval_end_to_end_over_http(server, tmp_path):
    baseline = [{"dataset": "helpful_base", "instruction": f"Name a colour number {i}.",
                 "output": f"Colour {i} is blue.", "generator": "baseline"} for i in range(4)]
    path = tmp_path / "alpaca_eval_baseline.json"
    path.write_text(json.dumps(baseline))
    backend = OpenAIBackend("tiny", base_url=server.url, max_retries=1, backoff=0.01)
    ctx = TaskContext(shots=0, data=str(path), limit=3, template=TEMPLATE,
                      options=_options(server, tmp_path), seed=9)
    out = get_task("alpaca_eval").run(backend, ctx)
    assert len(out.rows) == 3 and out.metric == "lc_win_rate"
    assert out.notes["position_seed"] == 9
    _check_missing_consistency(out, parse_preference)


def test_eval_cli_with_served_model_and_judge(server, tmp_path, capsys, monkeypatch):
    from sftlab.cli import main

    baseline = [{"dataset": "x", "instruction": f"Say {i}.", "output": f"{i}.",
                 "generator": "baseline"} for i in range(3)]
    data = tmp_path / "model_outputs.json"
    data.write_text(json.dumps(baseline))
    monkeypatch.setenv("TINY_JUDGE_KEY", "sk-secret-never-written")
    args = ["eval", "--backend", "openai", "--base-url", server.url, "--model", "tiny",
            "--task", "alpaca_eval", "--data", str(data), "--limit", "2", "--max-new-tokens", "8",
            "--template", TEMPLATE, "--judge-base-url", server.url, "--judge-model", "tiny",
            "--judge-api-key-env", "TINY_JUDGE_KEY", "--judge-max-tokens", "8",
            "--out", str(tmp_path / "out"), "--json"]
    code = main(args)
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert code == (0 if result["n"] else 1)  # no parsable judgment: a failed evaluation
    # every judgment came back (no "error"); the unparsable ones are counted as missing
    assert result["task"] == "alpaca_eval" and "error" not in result["outcomes"]
    assert result["n"] + result["outcomes"].get("missing", 0) == 2
    assert (tmp_path / "out" / "judgments.sqlite").exists()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"sk-secret-never-written" not in path.read_bytes(), path


def test_score_replays_mt_bench_answers_with_the_served_judge(server, tmp_path, capsys):
    from sftlab.cli import main

    questions = tmp_path / "question.jsonl"
    questions.write_text("".join(json.dumps(
        {"question_id": q, "category": "writing", "turns": [f"Write {q} words.", "Shorter."]})
        + "\n" for q in (1, 2)))
    preds = tmp_path / "answers.jsonl"
    preds.write_text("".join(json.dumps({"id": f"{q}/turn{t}", "output": f"Answer {q}.{t}"})
                             + "\n" for q in (1, 2) for t in (1, 2)))
    args = ["score", "--task", "mt_bench", "--data", str(questions), "--predictions", str(preds),
            "--judge-base-url", server.url, "--judge-model", "tiny", "--judge-max-tokens", "8",
            "--out", str(tmp_path / "out"), "--json"]
    for attempt in range(2):
        code = main(args)
        [result] = json.loads(capsys.readouterr().out)["results"]
        assert code == (0 if result["n"] else 1)  # no parsable judgment: a failed evaluation
        assert result["task"] == "mt_bench" and "error" not in result["outcomes"]
        assert result["n"] + result["outcomes"].get("missing", 0) == 4
        prov = json.loads((tmp_path / "out" / "mt_bench-0shot-opencompass.provenance.json")
                          .read_text())
        stats = prov["notes"]["judge_stats"]
        assert (stats["requests"], stats["cache_hits"]) == ((4, 0) if attempt == 0 else (0, 4))
        assert prov["metrics"]["n_judgments"] == 4


def test_sigterm_shuts_down_cleanly(server):  # keep last: it stops the module's server
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    assert server.stop() == 0, "\n".join(server.output)
    assert not any("Traceback" in line for line in server.output)
    assert server.output[-1] == "sftlab serve: stopped"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
