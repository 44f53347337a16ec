"""Every task x both formats: exact prompts on fixed items, few-shot selection, scoring."""

from __future__ import annotations

import pytest
from eval_fixtures import write_benchmarks

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import GenerateResult, LoglikelihoodResult
from sftlab.evaluate.tasks.base import TaskContext, get_task, task_names


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def first_query(name, shots, fmt, data, **kw):
    """``fmt`` may name a config after a colon: ``opencompass:ppl``."""
    fmt, _, config = fmt.partition(":")
    task = get_task(name)
    loaded, queries = task.build(TaskContext(shots=shots, format=fmt, data=str(data),
                                             config=config or None, **kw))
    return task, loaded, queries


PROMPTS = {
    ("mmlu", 1, "opencompass:ppl"): (
        "The following are multiple choice questions (with answers) about  elementary math.\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "What is 3+4?\nA. 7\nB. 6\nC. 5\nD. 1\nAnswer:"),
    ("mmlu", 1, "lm-eval"): (
        "The following are multiple choice questions (with answers) about elementary math.\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "What is 3+4?\nA. 7\nB. 6\nC. 5\nD. 1\nAnswer:"),
    ("boolq", 1, "opencompass:ppl"): (
        "The sky is blue.\nQuestion: is the sky blue?\nYes\n\nGrass is green.\nQuestion: is grass green?"),
    ("boolq", 1, "lm-eval"): (
        "The sky is blue.\nQuestion: is the sky blue?\nAnswer: yes\n\n"
        "Grass is green.\nQuestion: is grass green?\nAnswer:"),
    ("hellaswag", 0, "opencompass:ppl"): "A woman ties her shoes. She",
    ("hellaswag", 0, "lm-eval"): "Running: A woman ties her shoes. She",
    ("hellaswag", 1, "opencompass:ppl"): (
        "Continue the following text without adding any additional information or formatting:\n"
        "A man cracks an egg. He\nA) stirs it.\nB) eats the shell.\nC) sleeps.\nD) runs.\n"
        "What is the right option?\nA\n\n"
        "A woman ties her shoes. She\nA) starts to run.\nB) flies.\nC) melts.\nD) sings. loudly.\n"
        "What is the right option?"),
    ("hellaswag", 1, "lm-eval"): (
        "Cooking: A man cracks an egg. He stirs it.\n\nRunning: A woman ties her shoes. She"),
    ("gsm8k", 1, "opencompass"): (
        "Question: Tom has 2 apples and buys 3. How many?\nLet's think step by step\nAnswer:\n"
        "2+3=<<2+3=5>>5\nThe answer is 5\n\n"
        "Question: A box has 7 eggs; 2 break. How many remain?\nLet's think step by step\nAnswer:"),
    ("gsm8k", 0, "opencompass"): (  # gsm8k_0shot_gen_a58960
        "A box has 7 eggs; 2 break. How many remain?\nPlease reason step by step, and put your "
        "final answer within \\boxed{}."),
    ("gsm8k", 1, "lm-eval"): (
        "Question: Tom has 2 apples and buys 3. How many?\nAnswer: 2+3=<<2+3=5>>5\n#### 5\n\n"
        "Question: A box has 7 eggs; 2 break. How many remain?\nAnswer:"),
    ("nq_open", 1, "opencompass"): (
        "Q: who wrote hamlet?\nA: William Shakespeare.\n\nQ: what color is the sky?\nA:"),
    ("nq_open", 1, "lm-eval"): (
        "Answer these questions:\n\nQ: who wrote hamlet?\nA: William Shakespeare\n"
        "Q: what color is the sky?\nA:"),
    ("mbpp", 0, "opencompass"): (
        "You are an expert Python programmer, and here is your task: Write a function to double "
        "a number. Your code should pass these tests:\n\n assert double(2) == 4\n"
        "assert double(0) == 0\nassert double(-1) == -2  \n\n[BEGIN]\n"),
    ("mbpp", 0, "lm-eval"): (
        "You are an expert Python programmer, and here is your task: Write a function to double "
        "a number. Your code should pass these tests:\n\nassert double(2) == 4\n"
        "assert double(0) == 0\nassert double(-1) == -2\n[BEGIN]\n"),
    ("humaneval", 0, "opencompass"): (
        "Read the following function signature and docstring, and fully implement the function "
        "described. Your response should only contain the code for this function.\n"
        "def inc(x):\n    \"\"\"Add one.\"\"\"\n"),
    ("humaneval", 0, "lm-eval"): "def inc(x):\n    \"\"\"Add one.\"\"\"\n",
    ("math", 0, "opencompass"): (
        "What is $1+1$?\nPlease reason step by step, and put your final answer within \\boxed{}."),
    ("math", 0, "lm-eval"): "Problem:\nWhat is $1+1$?\n\nSolution:",
    # the generative OpenCompass configs (the defaults), as OpenCompass 0.5.4 renders them
    ("hellaswag", 0, "opencompass"): (
        "A woman ties her shoes. She\nQuestion: Which ending makes the most sense?\n"
        "A. starts to run.\nB. flies.\nC. melts.\nD. sings. loudly.\n"
        "You may choose from 'A', 'B', 'C', 'D'.\nAnswer:"),
    ("hellaswag", 1, "opencompass"): (
        "Continue the following text without adding any additional information or formatting:\n\n"
        "A man cracks an egg. He\nA) stirs it.\nB) eats the shell.\nC) sleeps.\nD) runs.\n"
        "What is the right option?\nA\n\n"
        "A woman ties her shoes. She\nA) starts to run.\nB) flies.\nC) melts.\nD) sings. loudly.\n"
        "What is the right option?\n\n"),
    ("boolq", 0, "opencompass"): "Grass is green.\nQuestion: is grass green\nA. Yes\nB. No\nAnswer:",
    ("boolq", 1, "opencompass"): (  # the example is evaluation row 0, the item itself
        "Grass is green.\nQuestion: is grass green\nA. Yes\nB. No\nAnswer:\nA\n"
        "Grass is green.\nQuestion: is grass green\nA. Yes\nB. No\nAnswer:"),
    ("mmlu", 0, "opencompass"): (  # the leading newline is OpenCompass's (empty </E> item)
        "\nThere is a single choice question about elementary math. Answer the question by "
        "replying A, B, C or D.\nQ: What is 3+4?\nA. 7\nB. 6\nC. 5\nD. 1\n"
        "Let's think step by step. A: "),
    ("mmlu", 1, "opencompass"): (
        "There is a single choice question about elementary math. Answer the question by "
        "replying A, B, C or D.\nQuestion: What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: \nB\n\n"
        "There is a single choice question about elementary math. Answer the question by "
        "replying A, B, C or D.\nQuestion: What is 3+4?\nA. 7\nB. 6\nC. 5\nD. 1\nAnswer: "),
}


def test_registry_has_the_eight_tasks():
    assert {"math", "gsm8k", "mbpp", "humaneval", "hellaswag", "nq_open", "boolq",
            "mmlu"} <= set(task_names())
    with pytest.raises(UserError, match="did you mean 'gsm8k'"):
        get_task("gsm8")


@pytest.mark.parametrize(("name", "shots", "fmt"), sorted(PROMPTS))
def test_prompt_is_the_documented_format(data, name, shots, fmt):
    _, _, queries = first_query(name, shots, fmt, data)
    q = queries[0]
    assert getattr(q, "context", None) or q.prompt == PROMPTS[(name, shots, fmt)]
    assert (q.context if hasattr(q, "context") else q.prompt) == PROMPTS[(name, shots, fmt)]


def test_choices_and_stops(data):
    _, _, [q, *_] = first_query("mmlu", 0, "opencompass:ppl", data)
    assert q.choices == [" A", " B", " C", " D"] and q.gold == 0
    _, _, [q, *_] = first_query("boolq", 0, "opencompass:ppl", data)
    assert q.choices == ["\nNo", "\nYes"] and q.gold == 1
    _, _, [q, *_] = first_query("boolq", 0, "lm-eval", data)
    assert q.choices == [" no", " yes"]
    _, _, [q, *_] = first_query("hellaswag", 0, "opencompass:ppl", data)
    assert q.mode == "mean_full" and q.choices[0] == "\nstarts to run."
    _, _, [q, *_] = first_query("hellaswag", 0, "lm-eval", data)
    assert q.mode == "sum" and q.choices[3] == " sings. loudly."
    _, _, [q, *_] = first_query("mbpp", 3, "opencompass", data)
    assert q.stop == () and q.prompt.count("[DONE]") == 3  # OpenCompass: no stop string
    _, _, [q, *_] = first_query("humaneval", 0, "lm-eval", data)
    assert q.stop == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    _, _, [q, *_] = first_query("nq_open", 0, "opencompass", data)
    assert q.prompt == "Q: what color is the sky?\nA:" and q.max_new_tokens == 50


def test_template_places_prompt_as_instruction(data):
    tpl = "###Question: {instruction}\n\n###Answer: {response}"
    _, _, [q, *_] = first_query("boolq", 0, "lm-eval", data, template=tpl)
    assert q.context == ("###Question: Grass is green.\nQuestion: is grass green?\nAnswer:"
                         "\n\n###Answer: ")
    assert q.choices == ["no", "yes"]
    _, _, [q, *_] = first_query("gsm8k", 0, "lm-eval", data, template=tpl)
    assert q.prompt.startswith("###Question: Question: A box") and q.prompt.endswith("###Answer: ")


def test_fewshot_first_k_from_fewshot_split(data):
    task, loaded, _ = first_query("gsm8k", 2, "lm-eval", data)
    shots = task.shots_for(loaded.items[0], loaded, TaskContext(shots=2, format="lm-eval"))
    assert [s.doc["answer"][-1] for s in shots] == ["5", "6"]
    assert not loaded.pool.from_eval


def test_mmlu_fewshot_same_subject(data):
    task, loaded, queries = first_query("mmlu", 1, "lm-eval", data)
    assert "Capital of France?" in queries[1].context  # geography item gets the geography shot
    assert "What is 1+1?" not in queries[1].context


def test_boolq_opencompass_fixed_ids(data):
    task, loaded, _ = first_query("boolq", 2, "opencompass:ppl", data)
    shots = task.shots_for(loaded.items[0], loaded, TaskContext(shots=2, format="opencompass",
                                                                config="SuperGLUE_BoolQ_ppl_314b96"))
    assert [s.id for s in shots] == ["0", "2"]  # positions 0, 2 of the train split


def test_fewshot_from_eval_split_excludes_item(data, tmp_path):
    single = tmp_path / "hellaswag_val.jsonl"
    single.write_text((data / "hellaswag_val.jsonl").read_text())
    task = get_task("hellaswag")
    ctx = TaskContext(shots=1, format="lm-eval", data=str(single))
    loaded, queries = task.build(ctx)
    assert loaded.pool.from_eval
    assert "Painting" in queries[0].context.split("\n\n")[0]  # item 0 gets item 1 as its shot
    assert "Running" in queries[1].context.split("\n\n")[0]
    out = task.run(FakeBackend(), ctx)
    assert "excluding the item itself" in out.notes["fewshot_source"]


def test_mbpp_fewshot_and_eval_ids(data):
    task, loaded, _ = first_query("mbpp", 3, "opencompass", data)
    assert [it.id for it in loaded.items] == ["11", "12"]  # task 2 is not in the test range
    out = task.notes(loaded, TaskContext(shots=3))
    assert out["fewshot_source"] == "built-in MBPP tasks 2, 3, 4"


def test_unsupported_shots_and_format():
    with pytest.raises(UserError, match="unsupported shot count 3"):
        get_task("math").check(TaskContext(shots=3))
    with pytest.raises(UserError, match="unknown format"):
        get_task("gsm8k").check(TaskContext(shots=0, format="helm"))


# ------------------------------------------------------------------ scoring with a fake model


class FakeBackend:
    """Log-likelihood: the continuation listed in ``prefer`` wins; generation: scripted texts."""

    name = "fake"

    def __init__(self, prefer=(), outputs=None):
        self.prefer = prefer
        self.outputs = outputs or {}

    def loglikelihood(self, requests):
        return [LoglikelihoodResult(0.0 if r.continuation.strip() in self.prefer else -5.0,
                                    False, 1) for r in requests]

    def generate(self, requests):
        return [GenerateResult([self.outputs.get(r.prompt, "")] * r.n) for r in requests]

    def provenance(self):
        return {"backend": self.name}


def test_choice_scoring_and_acc_norm(data):
    task = get_task("mmlu")
    ctx = TaskContext(shots=0, format="lm-eval", data=str(data))
    out = task.run(FakeBackend(prefer=("A",)), ctx)
    assert [r["extracted"] for r in out.rows] == ["A", "A", "A"]
    assert out.value == pytest.approx(100 / 3) and out.n == 3
    assert out.outcomes == {"fail": 2, "pass": 1}
    assert out.extra["subject_mean"] == pytest.approx(25.0)  # (50 + 0) / 2 subjects
    oc = task.run(FakeBackend(prefer=("A",)), TaskContext(shots=0, data=str(data), config="ppl"))
    assert oc.value == pytest.approx(25.0) and oc.extra["weighted"] == pytest.approx(100 / 3)


def test_replay_of_choice_task(data):
    task = get_task("boolq")
    ctx = TaskContext(shots=0, format="lm-eval", data=str(data))
    out = task.replay({"0": [" yes"], "1": ["maybe"]}, ctx)
    assert [r["outcome"] for r in out.rows] == ["pass", "parse_failure"]
    assert out.value == 50.0


def gen_outputs(task_name, fmt, data, answers, shots=0):
    task = get_task(task_name)
    ctx = TaskContext(shots=shots, format=fmt, data=str(data))
    _, queries = task.build(ctx)
    return task, ctx, {q.prompt: a for q, a in zip(queries, answers, strict=True)}


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
def test_gsm8k_scoring(data, fmt):
    first = "7 - 2 = 5 so #### 5" + ("\nQuestion: next 99" if fmt == "opencompass" else "")
    answers = [first, "The total is 2400."]
    task, ctx, outputs = gen_outputs("gsm8k", fmt, data, answers)
    out = task.run(FakeBackend(outputs=outputs), ctx)
    if fmt == "opencompass":  # last number before "Question:"
        assert [r["correct"] for r in out.rows] == [True, True]
    else:  # strict needs "#### N"; flexible takes the last number
        assert [r["correct"] for r in out.rows] == [True, False]
        assert out.rows[1]["outcome"] == "parse_failure"
        assert out.extra["flexible"] == 100.0


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
def test_nq_scoring(data, fmt):
    answers = [" Blue sky", " 8"] if fmt == "opencompass" else [" the blue", " eight legs"]
    task, ctx, outputs = gen_outputs("nq_open", fmt, data, answers)
    out = task.run(FakeBackend(outputs=outputs), ctx)
    assert [r["correct"] for r in out.rows] == [True, fmt == "opencompass"]


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
def test_code_scoring_runs_the_tests(data, fmt):
    good = (" 'def double(x):\n    return x * 2' \n[DONE] \n\n" if fmt == "opencompass"  # no stop: runs on
            else "def double(x):\n    return x * 2\n")
    task, ctx, outputs = gen_outputs("mbpp", fmt, data, [good, "def neg(x):\n    return x\n"])
    out = task.run(FakeBackend(outputs=outputs), ctx)
    assert [r["outcome"] for r in out.rows] == ["pass", "fail"]
    assert out.metric == "pass@1" and out.value == 50.0
    he = "```python\ndef inc(x):\n    return x + 1\n```" if fmt == "opencompass" else "    return x + 1\n"
    task, ctx, outputs = gen_outputs("humaneval", fmt, data, [he, "    return x +\n"])
    out = task.run(FakeBackend(outputs=outputs), ctx)
    assert [r["outcome"] for r in out.rows] == ["pass", "error"]


@pytest.mark.parametrize("fmt", ["opencompass", "lm-eval"])
def test_math_scoring(data, fmt):
    task, ctx, outputs = gen_outputs("math", fmt, data, ["so the answer is $\\boxed{2}$",
                                                          "$\\boxed{0.7}$"])
    out = task.run(FakeBackend(outputs=outputs), ctx)
    assert [r["correct"] for r in out.rows] == [True, False]
    assert out.rows[0]["item_id"] == "test/algebra/1.json"


def test_pass_at_k_with_samples(data):
    task = get_task("humaneval")
    ctx = TaskContext(shots=0, format="lm-eval", data=str(data))
    outputs = {"HumanEval/0": ["    return x + 1\n", "    return x\n"],
               "HumanEval/1": ["    return x\n", "    return x\n"]}
    out = task.replay(outputs, ctx)
    assert out.rows[0]["n_correct"] == 1 and out.rows[0]["score"] == 0.5
    assert out.value == 25.0
    assert out.outcomes == {"fail": 3, "pass": 1}


def test_generative_choice_configs_score_the_postprocessed_answer(data):
    """The default opencompass MC configs are generative: the postprocessor picks the answer;
    an unparsable one is wrong (OpenCompass's near-zero base-model scores)."""
    task = get_task("mmlu")
    ctx = TaskContext(shots=0, data=str(data))
    _, queries = task.build(ctx)
    assert ctx.config == "mmlu_zero_shot_gen_47e2c0"
    answers = ["The answer is A.", "I think (C) is wrong", "no idea"]  # golds: A, B, C
    out = task.run(FakeBackend(outputs={q.prompt: a for q, a in zip(queries, answers, strict=True)}),
                   ctx)
    assert [r["extracted"] for r in out.rows] == ["A", "C", None]
    assert [r["outcome"] for r in out.rows] == ["pass", "fail", "parse_failure"]
    assert out.value == pytest.approx(25.0)  # subject mean: elementary_math 1/2, geography 0/1
    boolq = get_task("boolq")
    ctx = TaskContext(shots=0, data=str(data))
    out = boolq.replay({"0": ["A. Yes"], "1": ["yes"]}, ctx)  # golds: A (yes), B (no)
    assert [r["extracted"] for r in out.rows] == ["A", None] and out.value == 50.0
    assert ctx.config == "SuperGLUE_BoolQ_gen_883d50"


def test_config_choice_is_checked(data):
    with pytest.raises(UserError, match="unknown OpenCompass config 'mmlu_gen_nope'"):
        get_task("mmlu").build(TaskContext(shots=0, data=str(data), config="mmlu_gen_nope"))
    with pytest.raises(UserError, match="covers 0-shot, not 5-shot"):
        get_task("mmlu").build(TaskContext(shots=5, data=str(data),
                                           config="mmlu_zero_shot_gen_47e2c0"))
    with pytest.raises(UserError, match="only chosen in the opencompass format"):
        get_task("mmlu").build(TaskContext(shots=0, format="lm-eval", data=str(data), config="ppl"))
    ctx = TaskContext(shots=0, data=str(data), config="ppl")
    get_task("hellaswag").build(ctx)
    assert ctx.config == "hellaswag_ppl_47bff9"


def test_template_mode_rounds_wraps_each_round(data):
    tpl = "###Question: {instruction}\n\n###Answer: {response}"
    _, _, [q, *_] = first_query("nq_open", 1, "opencompass", data, template=tpl,
                                template_mode="rounds")
    assert q.prompt == ("###Question: Q: who wrote hamlet?\n\n###Answer: A: William Shakespeare.\n"
                        "\n###Question: Q: what color is the sky?\n\n###Answer: ")
    _, _, [q, *_] = first_query("nq_open", 1, "opencompass", data, template=tpl)  # instruction
    assert q.prompt == ("###Question: Q: who wrote hamlet?\nA: William Shakespeare.\n\n"
                        "Q: what color is the sky?\nA:\n\n###Answer: ")
    _, _, [q, *_] = first_query("nq_open", 1, "lm-eval", data, template=tpl, template_mode="rounds")
    assert q.prompt.startswith("###Question: Answer these questions:")  # no rounds in lm-eval
    with pytest.raises(UserError, match="template_mode rounds covers the generative configs"):
        first_query("mmlu", 0, "opencompass:ppl", data, template=tpl, template_mode="rounds")
    with pytest.raises(UserError, match="unknown template mode 'chat'"):
        first_query("mmlu", 0, "opencompass", data, template=tpl, template_mode="chat")
