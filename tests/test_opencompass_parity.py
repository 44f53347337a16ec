"""sftlab's opencompass format against OpenCompass 0.5.4's own code (from its wheel).

Every default cell of the reference study (and the likelihood configs) is rendered by
OpenCompass's ``PromptTemplate``, retriever and base-model ``LMTemplateParser`` from the
config file itself, on real items of ``../shared/data`` and on the fixtures, and
compared byte for byte with the prompt sftlab sends its backend. The postprocessors
are run on the same raw outputs as sftlab's. Skips when the wheel cannot be had (see
``oc_reference.py``); the fixed expected strings of ``test_eval_tasks.py`` always run.

The rows handed to OpenCompass are built the way its dataset loaders build them
(``HellaswagDataset*``, ``BoolQDatasetV2`` / ``BoolQDataset``, ``MMLUDataset``,
``GSM8KDataset``, ``NQOpenDataset``, ``MBPPDataset``), from the same files.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from eval_fixtures import write_benchmarks
from oc_reference import reference

from sftlab.evaluate.tasks.base import TaskContext, get_task
from sftlab.evaluate.tasks.opencompass import first_capital_postprocess, first_option_postprocess

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
N = 4  # items per real-data cell


@pytest.fixture(scope="module")
def oc():
    ref = reference()
    if ref is None:
        pytest.skip("OpenCompass 0.5.4 wheel not available (set SFTLAB_OC_WHEEL or run make test)")
    return ref


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("ocbench"))


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} absent")
    return path


def ours(task: str, shots: int, data: Path | str, config: str | None = None, limit: int = N):
    t = get_task(task)
    ctx = TaskContext(shots=shots, data=str(data), limit=limit, config=config)
    loaded, queries = t.build(ctx)
    return loaded, queries, ctx


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- OpenCompass's rows


def hs_row(doc: dict, splits: int) -> dict:
    """OpenCompass's hellaswag.jsonl has lm-eval's ``query`` / ``choices`` / ``gold``."""
    from sftlab.evaluate.tasks.hellaswag import endings_of, query_of

    ch = endings_of(doc)
    return {"ctx": query_of(doc).split(": ", splits)[-1], "A": ch[0], "B": ch[1], "C": ch[2],
            "D": ch[3], "label": int(doc["label"])}


def boolq_row(doc: dict) -> dict:
    from sftlab.evaluate.tasks.boolq import gold_of

    return {"question": doc["question"], "passage": doc["passage"],
            "label": "A" if gold_of(doc) else "B", "answer": gold_of(doc)}


def mmlu_rows(path: Path, subject: str) -> list[dict]:
    from sftlab.evaluate.tasks.mmlu import LETTERS, answer_of, choices_of

    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subject"] == subject]
    return [{"input": r["question"], **dict(zip(LETTERS, choices_of(r), strict=True)),
             "target": LETTERS[answer_of(r)]} for r in rows]


@pytest.fixture(scope="module")
def mmlu_dir(tmp_path_factory):
    """The real MMLU test and dev files, alone in a folder (the few-shot split is found)."""
    out = tmp_path_factory.mktemp("mmlu")
    for name in ("mmlu_test.csv", "mmlu_dev.csv"):
        shutil.copy(shared(name), out / name)
    return out


def hellaswag_split(tmp: Path, n_train: int = 10) -> Path:
    """Real HellaSwag rows: the first ``n_train`` as the train split, the rest validation."""
    rows = _jsonl(shared("hellaswag_val_subset.jsonl"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "hellaswag_train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:n_train]), encoding="utf-8")
    (tmp / "hellaswag_validation.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[n_train:]), encoding="utf-8")
    return tmp


# ---------------------------------------------------------------- generative cells


def test_hellaswag_gen_6faab5(oc, fixtures):
    cfg = oc.config("hellaswag/hellaswag_gen_6faab5.py")["hellaswag_infer_cfg"]
    for data in (shared("hellaswag_val_subset.jsonl"), fixtures):
        loaded, queries, ctx = ours("hellaswag", 0, data)
        assert ctx.config == "hellaswag_gen_6faab5"
        test = [dict(hs_row(it.doc, 1), label="ABCD"[int(it.doc["label"])]) for it in loaded.items]
        for i, q in enumerate(queries):
            assert q.prompt == oc.render_gen(cfg, test, i, output_column="label")


@pytest.mark.parametrize("shots", [10, 1])
def test_hellaswag_10shot_gen_e42710(oc, tmp_path, shots):
    infer = oc.config("hellaswag/hellaswag_10shot_gen_e42710.py")["hellaswag_infer_cfg"]
    infer = {**infer, "retriever": {**infer["retriever"], "fix_id_list": list(range(shots))}}
    data = hellaswag_split(tmp_path)
    loaded, queries, ctx = ours("hellaswag", shots, data,
                                None if shots == 10 else "hellaswag_10shot_gen_e42710")
    assert ctx.config == "hellaswag_10shot_gen_e42710"
    train = [dict(hs_row(r, 1), label="ABCD"[int(r["label"])])
             for r in _jsonl(data / "hellaswag_train.jsonl")]
    test = [dict(hs_row(it.doc, 1), label="ABCD"[int(it.doc["label"])]) for it in loaded.items]
    for i, q in enumerate(queries):
        assert q.prompt == oc.render_gen(infer, test, i, train=train, output_column="label")


@pytest.mark.parametrize("shots", [0, 5, 1])
def test_boolq_gen(oc, fixtures, shots):
    name = ("SuperGLUE_BoolQ/SuperGLUE_BoolQ_gen_883d50.py" if shots == 0 else
            "SuperGLUE_BoolQ/SuperGLUE_BoolQ_few_shot_gen_ba58ea.py")
    infer = oc.config(name)["BoolQ_infer_cfg"]
    if shots == 1:  # sftlab's 1-shot: the same form with the config's first example
        infer = {**infer, "retriever": {**infer["retriever"], "fix_id_list": [0]}}
    fixture = [fixtures / "boolq_dev.jsonl"] if shots < 5 else []  # 2 rows: too few for 5-shot
    for data in (shared("boolq_dev_parsed.jsonl"), *fixture):
        loaded, queries, _ = ours("boolq", shots, data)
        test = [boolq_row(it.doc) for it in loaded.all_items]
        for i, q in enumerate(queries):
            assert q.prompt == oc.render_gen(infer, test, i, output_column="label")


@pytest.mark.parametrize("shots", [0, 5])
def test_mmlu_gen(oc, shots, mmlu_dir):
    name = "mmlu/mmlu_zero_shot_gen_47e2c0.py" if shots == 0 else "mmlu/mmlu_gen_4d595a.py"
    datasets = {d["abbr"]: d for d in oc.config(name)["mmlu_datasets"]}
    test_csv, dev_csv = shared("mmlu_test.csv"), shared("mmlu_dev.csv")
    loaded, queries, _ = ours("mmlu", shots, mmlu_dir, limit=None)
    by_subject: dict[str, list[int]] = {}
    for i, it in enumerate(loaded.items):
        by_subject.setdefault(it.doc["subject"], []).append(i)
    for subject in sorted(by_subject)[:3] + sorted(by_subject)[-2:]:
        infer = datasets[f"lukaemon_mmlu_{subject}"]["infer_cfg"]
        test, dev = mmlu_rows(test_csv, subject), mmlu_rows(dev_csv, subject)
        for j, i in enumerate(by_subject[subject][:2]):
            assert queries[i].prompt == oc.render_gen(infer, test, j, train=dev,
                                                      output_column="target")


def test_gsm8k_gen(oc, fixtures):
    data = shared("gsm8k_test.jsonl")
    for shots, name in ((0, "gsm8k/gsm8k_0shot_gen_a58960.py"), (4, "gsm8k/gsm8k_gen_1d7fe4.py")):
        infer = oc.config(name)["gsm8k_infer_cfg"]
        loaded, queries, _ = ours("gsm8k", shots, data)
        test = [{"question": it.doc["question"], "answer": ""} for it in loaded.items]
        for i, q in enumerate(queries):
            assert q.prompt == oc.render_gen(infer, test, i, output_column="answer")


@pytest.mark.parametrize("shots", [0, 1, 5, 25])
def test_nq_open_gen_e93f8a(oc, shots, tmp_path):
    datasets = {d["abbr"]: d for d in oc.config("nq/nq_open_gen_e93f8a.py")["nq_datasets"]}
    infer = datasets[f"nq_open_{shots}shot"]["infer_cfg"]
    rows = _jsonl(shared("nq_open_dev.jsonl"))
    (tmp_path / "nq_open_train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:25]), encoding="utf-8")
    (tmp_path / "nq_open_validation.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[25:]), encoding="utf-8")
    loaded, queries, _ = ours("nq_open", shots, tmp_path)
    train = [{"question": r["question"], "answer": r["answer"][0]} for r in rows[:25]]
    test = [{"question": it.doc["question"], "answer": it.doc["answer"]} for it in loaded.items]
    for i, q in enumerate(queries):
        assert q.prompt == oc.render_gen(infer, test, i, train=train, output_column="answer")


def test_math_humaneval_mbpp_gen(oc):
    math = oc.config("math/math_0shot_gen_393424.py")["math_infer_cfg"]
    loaded, queries, _ = ours("math", 0, shared("math_test.jsonl"))
    test = [{"problem": it.doc["problem"], "solution": ""} for it in loaded.items]
    assert [q.prompt for q in queries] == [
        oc.render_gen(math, test, i, output_column="solution") for i in range(len(test))]
    he = oc.config("humaneval/humaneval_openai_sample_evals_gen_dcae0e.py")["humaneval_infer_cfg"]
    loaded, queries, _ = ours("humaneval", 0, shared("humaneval.jsonl"))
    test = [{"prompt": it.doc["prompt"], "task_id": ""} for it in loaded.items]
    assert [q.prompt for q in queries] == [
        oc.render_gen(he, test, i, output_column="task_id") for i in range(len(test))]
    mbpp = oc.config("mbpp/mbpp_gen_830460.py")["mbpp_infer_cfg"]
    loaded, queries, _ = ours("mbpp", 3, shared("mbpp.jsonl"))
    test = [{"text": it.doc["text"], "test_list": "\n".join(it.doc["test_list"]),
             "test_list_2": ""} for it in loaded.items]
    assert [q.prompt for q in queries] == [
        oc.render_gen(mbpp, test, i, output_column="test_list_2") for i in range(len(test))]


# ---------------------------------------------------------------- likelihood configs


def _ppl_strings(queries) -> list[list[str]]:
    return [[q.context + c for c in q.choices] for q in queries]


def test_hellaswag_ppl_configs(oc, fixtures, tmp_path):
    cfg = oc.config("hellaswag/hellaswag_ppl_47bff9.py")["hellaswag_infer_cfg"]
    loaded, queries, _ = ours("hellaswag", 0, shared("hellaswag_val_subset.jsonl"), "ppl")
    test = [hs_row(it.doc, 2) for it in loaded.items]
    for i, strings in enumerate(_ppl_strings(queries)):
        assert strings == list(oc.render_ppl(cfg, test, i, output_column="label").values())
    cfg = oc.config("hellaswag/hellaswag_10shot_ppl_59c85e.py")["hellaswag_infer_cfg"]
    data = hellaswag_split(tmp_path)
    loaded, queries, _ = ours("hellaswag", 10, data, "ppl")
    train = [dict(hs_row(r, 1), label="ABCD"[int(r["label"])])
             for r in _jsonl(data / "hellaswag_train.jsonl")]
    test = [dict(hs_row(it.doc, 1), label="ABCD"[int(it.doc["label"])]) for it in loaded.items]
    for i, strings in enumerate(_ppl_strings(queries)):
        ref = oc.render_ppl(cfg, test, i, train=train, output_column="label")
        assert strings == [ref[L] for L in "ABCD"]


def test_boolq_ppl_314b96(oc):
    cfg = oc.config("SuperGLUE_BoolQ/SuperGLUE_BoolQ_ppl_314b96.py")["BoolQ_infer_cfg"]
    loaded, queries, _ = ours("boolq", 0, shared("boolq_dev_parsed.jsonl"), "ppl")
    test = [boolq_row(it.doc) for it in loaded.items]
    for i, strings in enumerate(_ppl_strings(queries)):
        ref = oc.render_ppl(cfg, test, i, output_column="answer")
        assert strings == [ref[0], ref[1]]


@pytest.mark.parametrize("shots", [5, 0])
def test_mmlu_ppl_ac766d(oc, shots, mmlu_dir):
    datasets = {d["abbr"]: d for d in oc.config("mmlu/mmlu_ppl_ac766d.py")["mmlu_datasets"]}
    loaded, queries, _ = ours("mmlu", shots, mmlu_dir, "ppl", limit=None)
    subject = loaded.items[0].doc["subject"]
    infer = datasets[f"lukaemon_mmlu_{subject}"]["infer_cfg"]
    if shots == 0:  # no 0-shot ppl config exists: ac766d with no examples (sftlab's)
        infer = {**infer, "retriever": {**infer["retriever"], "fix_id_list": []}}
    test = mmlu_rows(SHARED / "mmlu_test.csv", subject)
    dev = mmlu_rows(shared("mmlu_dev.csv"), subject)
    for i, strings in enumerate(_ppl_strings(queries[:3])):
        ref = oc.render_ppl(infer, test, i, train=dev, output_column="target")
        assert strings == [ref[L] for L in "ABCD"]


# ---------------------------------------------------------------- postprocessors

OPTION_OUTPUTS = [
    "The answer is B.", "B", " C) because", "Answer: D", "answer:a", "I think (C) is wrong",
    "no idea", "", "A and B are both plausible, but D", "The correct answer is \\boxed{C}",
    "选项 B 正确", "答案是C", "1. A", "Let's think step by step. The sky is blue, so A.",
    "\nB\n\nQuestion: next", "Both A: and C: apply", "the answer is (D)", "Dogs. B",
    "**C**", "The answer to the question is A", "故选B只有选项A是对", "APPLE",
]
CAPITAL_OUTPUTS = ["A", " B. No", "yes", "Yes", "no, A", "", "123 x", "\nA\nB", "é É"]


def test_postprocessors_match_opencompass(oc):
    for text in OPTION_OUTPUTS:
        for options in ("ABCD", "AB"):
            assert first_option_postprocess(text, options) == \
                oc.post.first_option_postprocess(text, options), (text, options)
            assert first_option_postprocess(text, options, cushion=False) == \
                oc.post.first_option_postprocess(text, options, cushion=False), (text, options)
    for text in CAPITAL_OUTPUTS:
        assert first_capital_postprocess(text) == oc.post.first_capital_postprocess(text), text


def test_generative_verdicts_match_opencompass(oc, fixtures):
    """Per-item verdicts of sftlab's scorer equal OpenCompass's (postprocess, then
    ``AccEvaluator``'s exact comparison with the gold label)."""
    task = get_task("mmlu")
    ctx = TaskContext(shots=0, data=str(fixtures))
    loaded, _ = task.build(ctx)
    outputs = {it.id: [text] for it, text in zip(loaded.items, OPTION_OUTPUTS, strict=False)}
    out = task.replay(outputs, ctx)
    for it, row in zip(loaded.items, out.rows, strict=True):
        gold = task.gold_label(it)
        assert row["correct"] == (oc.post.first_option_postprocess(outputs[it.id][0], "ABCD") == gold)


def test_wheel_found_in_cache_dir(tmp_path, monkeypatch):
    """A .whl in the cache folder is unzipped next to it and used."""
    import oc_reference

    root = oc_reference.wheel_dir()
    if root is None:
        pytest.skip("no wheel")
    whl = next(iter(sorted(Path(root).parent.glob("opencompass-*.whl"))), None)
    if whl is None:
        pytest.skip("the wheel is only unzipped here")
    cache = tmp_path / f"opencompass-{oc_reference.VERSION}"
    cache.mkdir()
    shutil.copy(whl, cache / whl.name)
    monkeypatch.setenv("SFTLAB_OC_WHEEL", "")
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path))
    assert oc_reference.wheel_dir() == cache / "unpacked"


def test_sftlab_prompts_command_is_byte_identical(oc, capsys):
    """``sftlab prompts --json`` prints OpenCompass's own prompts."""
    from sftlab.cli import main

    assert main(["prompts", "--task", "boolq:0", "--data", str(shared("boolq_dev_parsed.jsonl")),
                 "--limit", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["prompts"]
    infer = oc.config("SuperGLUE_BoolQ/SuperGLUE_BoolQ_gen_883d50.py")["BoolQ_infer_cfg"]
    test = [boolq_row(r) for r in _jsonl(shared("boolq_dev_parsed.jsonl"))[:3]]
    assert [r["prompt"] for r in rows] == [oc.render_gen(infer, test, i, output_column="label")
                                           for i in range(3)]


# ---------------------------------------------------------------- code scorers

MBPP_OUTPUTS = [
    " 'def f(x):\n    return 2 * x' \n[DONE] \n\n",
    # runaway: the model invents the next task; OpenCompass extracts that task's code
    " 'def f(x):\n    return 2 * x' \n[DONE] \n\n You are an expert Python programmer, and here "
    "is your task: Write g. Your code should pass these tests:\n\n assert g(1) == 1  \n\n"
    "[BEGIN]\n 'def g(x):\n    return x' \n[DONE] \n\n",
    "```python\ndef f(x):\n    return x + x\n```\nThat is all.",
    "def f(x):\n    return x*2\n[DONE]",
    "'def f(x):\\_return 2*x'",
    "no code at all",
    "",
]


def test_mbpp_extraction_and_tests_match_opencompass(oc):
    from sftlab.evaluate.tasks.mbpp import oc_extract, type_aware_tests

    mbpp = oc.module("opencompass.datasets.mbpp")
    evaluator = mbpp.MBPPEvaluator.__new__(mbpp.MBPPEvaluator)
    for text in MBPP_OUTPUTS:
        assert oc_extract(text) == evaluator._process_answer(text), text
    rows = _jsonl(shared("mbpp.jsonl"))[10:40]
    for row in rows:
        assert type_aware_tests(row["test_list"]) == \
            oc.module("opencompass.utils.code_execution").make_assertions_type_aware(
                "\n".join(row["test_list"]))


def test_type_aware_equality_matches_opencompass(oc):
    from sftlab.evaluate.tasks.mbpp import _TYPE_AWARE_SOURCE, TYPE_AWARE_EQUAL

    ns: dict = {}
    exec(_TYPE_AWARE_SOURCE, ns)  # noqa: S102
    ours_eq = ns[TYPE_AWARE_EQUAL]
    theirs = oc.module("opencompass.utils.code_execution").type_aware_equal

    class Liar:
        def __eq__(self, other):
            return True

    cases = [(1, 1), (1, 1.0), (True, 1), ([1, 2], [1, 2]), ([1, 2], (1, 2)), ((1, [2]), (1, [2.0])),
             ({"a": 1}, {"a": 1}), ({"a": 1}, {"a": 1.0}), ({1, 2}, {2, 1}), ({1}, {1.0}),
             (frozenset([1]), {1}), ("ab", "ab"), (None, None), (Liar(), 3), (Liar(), Liar()),
             (float("nan"), float("nan")), ([], []), ({1: [1]}, {1: [1]})]
    for a, b in cases:
        assert ours_eq(a, b) == theirs(a, b), (a, b)


def test_mbpp_and_humaneval_verdicts_quirks_included(oc, fixtures):
    """Per-item verdicts in the opencompass format on realistic and adversarial outputs:
    a runaway MBPP generation scores the invented task's code; an unfenced HumanEval body
    is left-stripped into a top-level return and fails (as OpenCompass 0.5.4)."""
    he = oc.module("opencompass.datasets.humaneval")
    from sftlab.evaluate.tasks.humaneval import oc_completion

    for text in ("    return x + 1\n", "```python\ndef inc(x):\n    return x + 1\n```",
                 "Here:\n```\n    return x\n```\nmore ```py\nx\n```", "", "\n\n  return 1"):
        assert oc_completion(text) == he.humaneval_postprocess_v2(text)
    task = get_task("humaneval")
    ctx = TaskContext(shots=0, data=str(fixtures))
    out = task.replay({"HumanEval/0": ["    return x + 1\n"],
                       "HumanEval/1": ["```python\ndef sq(x):\n    return x * x\n```"]}, ctx)
    assert [r["outcome"] for r in out.rows][0] != "pass"  # unfenced body: fails, as OpenCompass
    task = get_task("mbpp")
    ctx = TaskContext(shots=3, data=str(fixtures))
    runaway = (" 'def double(x):\n    return 2 * x' \n[DONE] \n\n You are an expert Python "
               "programmer, and here is your task: ... \n\n[BEGIN]\n 'def double(x):\n    return x' "
               "\n[DONE] \n\n")
    out = task.replay({"11": [runaway], "12": [" 'def neg(x):\n    return -x' \n[DONE] \n"]}, ctx)
    assert [r["outcome"] for r in out.rows] == ["fail", "pass"]
    assert out.rows[0]["extracted"] == "def double(x):\n    return x"


MATH_CASES = [  # (model output, reference solution)
    ("So the answer is $\\boxed{0.5}$.", "Thus $\\boxed{\\frac12}$."),
    ("$\\boxed{\\frac{1}{2}}$", "Thus $\\boxed{\\frac12}$."),
    ("The final answer is $\\boxed{1+2x}$", "So $\\boxed{2x+1}$."),
    ("\\boxed{2x+1}", "So $\\boxed{2x+1}$."),
    ("The answer is 1,234.", "We get $\\boxed{1234}$."),
    ("\\boxed{10\\%}", "$\\boxed{10}$"), ("\\boxed{\\dfrac{3}{4}}", "$\\boxed{\\frac{3}{4}}$"),
    ("\\boxed{3/4}", "$\\boxed{\\frac34}$"), ("\\boxed{5 \\text{ cm}}", "$\\boxed{5}$"),
    ("\\boxed{x=3}", "$\\boxed{3}$"), ("\\boxed{\\sqrt2}", "$\\boxed{\\sqrt{2}}$"),
    ("\\boxed{(1,2)}", "$\\boxed{(1, 2)}$"), ("\\boxed{\\{1\\}}", "$\\boxed{1}$"),
    ("no boxed answer here. final answer: 7", "$\\boxed{7}$"), ("", "$\\boxed{7}$"),
    ("\\boxed{3.0}", "$\\boxed{3}$"), ("\\boxed{\\infty}", "$\\boxed{infinity}$"),
    ("\\fbox{4}", "$\\boxed{4}$"), ("\\boxed{1/x}", "$\\boxed{\\frac{1}{x}}$"),
]


def test_math_v2_verdicts_match_opencompass(oc, fixtures):
    from sftlab.evaluate.tasks.oc_math import boxed_answer, is_equiv_v2, math_postprocess_v2

    m = oc.module("opencompass.datasets.math")
    evaluator = m.MATHEvaluator.__new__(m.MATHEvaluator)
    evaluator.version = "v2"
    for output, solution in MATH_CASES:
        pred, gold = math_postprocess_v2(output), boxed_answer(solution)
        assert pred == m.math_postprocess_v2(output), output
        assert gold == m.extract_boxed_answer(solution), solution
        assert is_equiv_v2(pred, gold) == evaluator.is_equiv(pred, gold), (output, solution)
    task = get_task("math")
    ctx = TaskContext(shots=0, data=str(fixtures))
    out = task.replay({"test/algebra/1.json": ["So $1+1=\\boxed{2}$."],
                       "test/algebra/2.json": ["$\\boxed{0.5}$"]}, ctx)
    assert [r["correct"] for r in out.rows] == [True, False]  # v2: 0.5 is not \frac{1}{2}
    assert out.extra["math_verify"] == 100.0 and out.value == 50.0


# ---------------------------------------------------------------- template_mode: rounds

PAPER_TEMPLATE = "###Question: {instruction}\n\n###Answer: {response}"


def test_rounds_mode_is_opencompass_with_the_template_as_meta_template(oc, tmp_path, mmlu_dir):
    """With ``template_mode: rounds`` the prompt is what OpenCompass's LMTemplateParser gives
    with the study template as the model's meta template (HUMAN / BOT begin and end)."""
    from sftlab.evaluate.tasks.opencompass import MetaTemplate

    meta = MetaTemplate.from_template(PAPER_TEMPLATE).as_opencompass()

    def rounds(task, shots, data, limit=2):
        t = get_task(task)
        ctx = TaskContext(shots=shots, data=str(data), limit=limit, template=PAPER_TEMPLATE,
                          template_mode="rounds")
        return t.build(ctx)

    # NQ 1-shot: the example of OPENCOMPASS.md
    rows = _jsonl(shared("nq_open_dev.jsonl"))
    (tmp_path / "nq_open_train.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "nq_open_validation.jsonl").write_text(json.dumps(rows[1]) + "\n")
    loaded, queries = rounds("nq_open", 1, tmp_path)
    infer = {d["abbr"]: d for d in oc.config("nq/nq_open_gen_e93f8a.py")["nq_datasets"]}[
        "nq_open_1shot"]["infer_cfg"]
    expected = oc.render_gen(infer, [{"question": rows[1]["question"], "answer": ""}], 0,
                             train=[{"question": rows[0]["question"], "answer": rows[0]["answer"][0]}],
                             output_column="answer", meta_template=meta)
    assert queries[0].prompt == expected == (
        f"###Question: Q: {rows[0]['question']}?\n\n###Answer: A: {rows[0]['answer'][0]}.\n\n"
        f"###Question: Q: {rows[1]['question']}?\n\n###Answer: ")
    # MMLU 0 and 5-shot, BoolQ 5-shot, HellaSwag 10-shot, GSM8K 4-shot, MBPP 3-shot
    subject = "abstract_algebra"
    test, dev = mmlu_rows(mmlu_dir / "mmlu_test.csv", subject), mmlu_rows(mmlu_dir / "mmlu_dev.csv", subject)
    for shots, name in ((0, "mmlu/mmlu_zero_shot_gen_47e2c0.py"), (5, "mmlu/mmlu_gen_4d595a.py")):
        infer = {d["abbr"]: d for d in oc.config(name)["mmlu_datasets"]}[
            f"lukaemon_mmlu_{subject}"]["infer_cfg"]
        _, queries = rounds("mmlu", shots, mmlu_dir)
        assert queries[0].prompt == oc.render_gen(infer, test, 0, train=dev, output_column="target",
                                                  meta_template=meta)
    infer = oc.config("SuperGLUE_BoolQ/SuperGLUE_BoolQ_few_shot_gen_ba58ea.py")["BoolQ_infer_cfg"]
    loaded, queries = rounds("boolq", 5, shared("boolq_dev_parsed.jsonl"))
    test = [boolq_row(it.doc) for it in loaded.all_items]
    assert queries[1].prompt == oc.render_gen(infer, test, 1, output_column="label",
                                              meta_template=meta)
    infer = oc.config("hellaswag/hellaswag_10shot_gen_e42710.py")["hellaswag_infer_cfg"]
    data = hellaswag_split(tmp_path / "hs")
    loaded, queries = rounds("hellaswag", 10, data)
    train = [dict(hs_row(r, 1), label="ABCD"[int(r["label"])])
             for r in _jsonl(data / "hellaswag_train.jsonl")]
    test = [dict(hs_row(it.doc, 1), label="ABCD"[int(it.doc["label"])]) for it in loaded.items]
    assert queries[0].prompt == oc.render_gen(infer, test, 0, train=train, output_column="label",
                                              meta_template=meta)
    infer = oc.config("gsm8k/gsm8k_gen_1d7fe4.py")["gsm8k_infer_cfg"]
    loaded, queries = rounds("gsm8k", 4, shared("gsm8k_test.jsonl"))
    assert queries[0].prompt == oc.render_gen(
        infer, [{"question": it.doc["question"], "answer": ""} for it in loaded.items], 0,
        output_column="answer", meta_template=meta)
    infer = oc.config("mbpp/mbpp_gen_830460.py")["mbpp_infer_cfg"]
    loaded, queries = rounds("mbpp", 3, shared("mbpp.jsonl"))
    test = [{"text": it.doc["text"], "test_list": "\n".join(it.doc["test_list"]), "test_list_2": ""}
            for it in loaded.items]
    assert queries[0].prompt == oc.render_gen(infer, test, 0, output_column="test_list_2",
                                              meta_template=meta)


GSM8K_OUTPUTS = ["The answer is 1,234.", "so 18.\nQuestion: what is 42?", "-2.5", "no digits",
                 "The answer is \\boxed{72}.", "3.0 apples", "Total: $1,200,000", "4\n\nQuestion:"]


def test_gsm8k_verdicts_match_opencompass(oc, fixtures):
    """Headline verdicts equal OpenCompass's (``1,234`` read as 234, quirk included);
    the separator-tolerant reading is the secondary ``separator_tolerant``."""
    from sftlab.evaluate.metrics import gsm8k_extract, gsm8k_match

    g = oc.module("opencompass.datasets.gsm8k")
    evaluator = g.Gsm8kEvaluator.__new__(g.Gsm8kEvaluator)
    for gold in ("work\n#### 1,234", "x\n#### 18", "x\n#### 72", "x\n#### 3", "x\n#### 1200000"):
        refer = g.gsm8k_dataset_postprocess(gold)
        for text in GSM8K_OUTPUTS:
            pred = gsm8k_extract(text, "opencompass")["accuracy"]
            theirs = g.gsm8k_postprocess(text)
            assert (pred or "NULL") == theirs, text
            assert gsm8k_match(pred, gold) == evaluator.is_equal(theirs, refer), (text, gold)
    task = get_task("gsm8k")
    ctx = TaskContext(shots=0, data=str(fixtures))
    out = task.replay({"0": ["#### 5"], "1": ["2*1200 = 2,400"]}, ctx)
    assert [r["correct"] for r in out.rows] == [True, False]
    assert out.value == 50.0 and out.extra["separator_tolerant"] == 100.0


def test_nq_verdicts_match_opencompass(oc):
    from sftlab.evaluate.metrics import nq_substring_match

    nq = oc.module("opencompass.datasets.natural_question")
    evaluator = nq.NQEvaluator.__new__(nq.NQEvaluator)
    golds = [["Bobby Scott", "Bob Russell"], ["14 December 1972 UTC", "December 1972"], ["the Eagles"]]
    outputs = [" Bobby Scott and Bob Russell", "I think the answer is December 1972.", " Eagles",
               "\nthe eagles", " The Beatles, not the Eagles", "", "December, 1972"]
    for gold in golds:
        for text in outputs:
            [detail] = evaluator.score([text], [gold])["details"]
            assert nq_substring_match(text, gold) == detail["correct"], (text, gold)
