"""MT-Bench: rating extraction, FastChat shapes, turn-by-turn answers, grading, missing counts."""

from __future__ import annotations

import json
import math
import string

import pytest
from test_judge import FaultServer

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import GenerateResult
from sftlab.evaluate.tasks.base import TaskContext, get_task
from sftlab.evaluate.tasks.mt_bench import (
    TEMPERATURE,
    generate_answers,
    judge_request,
    load_judge_prompts,
    load_questions,
    parse_rating,
)

RECORDED = [  # judge outputs in the styles seen from GPT-4 and open judges
    ("The assistant's answer is accurate and well organised. Rating: [[8]]", 8.0),
    ("Explanation: mostly right, one slip in step 3.\n\nRating: [[7.5]]", 7.5),
    ("Overall a decent answer; I would give it [6].", 6.0),
    ("The response cites a source [1] and is complete. Rating: [[9]]", 9.0),  # [[x]] wins
    ("Perfect answer. Rating: [[10]]", 10.0),
    ("First [[5]], but on reflection [[9]]", 5.0),  # FastChat takes the first match
    ("Rating: 8/10", None),
    ("I cannot evaluate this response.", None),
    ("Rating: [[rating]]", None),
    ("Rating: [[0]]", None),  # off the 1-10 scale: missing, not 0
    ("Rating: [[11]]", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), RECORDED)
def test_rating_extraction_on_recorded_judge_texts(text, expected):
    assert parse_rating(text) == expected


def _placeholders(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def test_default_judge_prompts_have_fastchat_shape(shared_data):
    ours = load_judge_prompts(None)
    official = load_judge_prompts(shared_data / "mt_bench_judge_prompts.jsonl")
    for name, prompt in ours.items():
        assert set(prompt) == set(official[name]), name
        assert prompt["type"] == "single" and prompt["output_format"] == "[[rating]]"
        assert _placeholders(prompt["prompt_template"]) == _placeholders(
            official[name]["prompt_template"]), name
        assert prompt["prompt_template"] != official[name]["prompt_template"]  # our own words


@pytest.mark.shared_data
def test_official_questions_and_references_load(shared_data):
    questions = load_questions(str(shared_data))
    assert len(questions) == 80 and all(len(q.turns) == 2 for q in questions)
    by_cat = {}
    for q in questions:
        by_cat.setdefault(q.category, []).append(q)
    assert set(by_cat) == set(TEMPERATURE) and all(len(v) == 10 for v in by_cat.values())
    for cat in ("math", "reasoning", "coding"):
        assert all(q.references and len(q.references) == 2 for q in by_cat[cat]), cat


@pytest.mark.shared_data
def test_judge_requests_match_fastchat_prompts(shared_data):
    questions = {q.id: q for q in load_questions(str(shared_data))}
    prompts = load_judge_prompts(shared_data / "mt_bench_judge_prompts.jsonl")
    answers = ["first answer", "second answer"]
    name, messages = judge_request(questions["81"], answers, 1, prompts)  # writing
    assert name == "single-v1"
    assert messages == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": prompts["single-v1"]["prompt_template"].format(
            question=questions["81"].turns[0], answer="first answer")}]
    math_q = questions["111"]
    name, messages = judge_request(math_q, answers, 2, prompts)
    assert name == "single-math-v1-multi-turn"
    assert messages[1]["content"] == prompts[name]["prompt_template"].format(
        question_1=math_q.turns[0], question_2=math_q.turns[1], answer_1="first answer",
        answer_2="second answer", ref_answer_1=math_q.references[0],
        ref_answer_2=math_q.references[1])
    assert messages[0]["content"] == prompts[name]["system_prompt"]


class FakeBackend:
    """Answers ``A<k>[<question marker>]``; records every request."""

    name = "fake"

    def __init__(self, answer=None):
        self.requests = []
        self.answer = answer or (lambda prompt: f"answer {len(self.requests)}")

    def generate(self, requests):
        out = []
        for req in requests:
            self.requests.append(req)
            out.append(GenerateResult([self.answer(req.prompt)]))
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError

    def provenance(self):
        return {"backend": "fake"}


QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a poem.", "Make it shorter."]},
    {"question_id": 2, "category": "math", "turns": ["What is 2+2?", "And 3+3?"],
     "reference": ["4", "6"]},
    {"question_id": 3, "category": "stem", "turns": ["NORATING please", "Why?"]},
    {"question_id": 4, "category": "coding", "turns": ["Reverse a list. JUDGEDOWN", "In C?"]},
]


@pytest.fixture()
def question_file(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def test_answers_are_generated_turn_by_turn(question_file):
    questions = load_questions(str(question_file))
    backend = FakeBackend()
    template = "###Question: {instruction}\n\n###Answer: {response}"
    answers, prompts = generate_answers(backend, questions, template, 64, seed=5)
    assert answers["1"] == ["answer 1", "answer 5"]
    turn2 = prompts["1/turn2"]
    assert turn2 == ("###Question: Write a poem.\n\n###Answer: answer 1\n\n"
                     "###Question: Make it shorter.\n\n###Answer: ")
    assert [r.temperature for r in backend.requests[:4]] == [0.7, 0.0, 0.1, 0.0]
    assert all(r.stop == ("###Question:",) and r.max_new_tokens == 64 for r in backend.requests)


def _judge_reply(prompt: str) -> str:
    if "NORATING" in prompt:
        return "I am unable to grade this."
    if "JUDGEDOWN" in prompt:
        return "FAULT"  # never reached: the server fails first
    return "Good. Rating: [[4]]" if "Conversation begins" in prompt else "Rating: [[8]]"


def test_grading_counts_missing_and_never_scores_it_zero(question_file, tmp_path):
    server = FaultServer(responder=_judge_reply)
    # the coding question's judge requests always fail with HTTP 500
    backend = FakeBackend(answer=lambda p: "ok FAULT:500x99" if "JUDGEDOWN" in p else "ok")
    options = {"judge": {"base_url": server.url, "model": "j", "max_retries": 1,
                         "backoff_base": 0.01, "timeout": 5},
               "judge_cache": str(tmp_path / "judgments.sqlite"), "max_new_tokens": 8}
    ctx = TaskContext(shots=0, data=str(question_file), options=options)
    try:
        out = get_task("mt_bench").run(backend, ctx)
        asked = sum(len(v) for v in server.seen.values())
        again = get_task("mt_bench").run(FakeBackend(answer=backend.answer), ctx)
        asked_again = sum(len(v) for v in server.seen.values()) - asked
    finally:
        server.close()
    rows = {r["item_id"]: r for r in out.rows}
    assert set(rows) == {f"{q}/turn{t}" for q in "1234" for t in (1, 2)}
    assert rows["3/turn1"]["outcome"] == "missing" and rows["3/turn1"]["score"] is None
    assert rows["4/turn1"]["outcome"] == "error" and rows["4/turn2"]["score"] is None
    assert rows["2/turn1"]["judge_prompt"] == "single-math-v1"
    assert rows["2/turn2"]["judge_prompt"] == "single-math-v1-multi-turn"
    assert rows["1/turn1"]["judge_prompt"] == "single-v1"
    assert rows["3/turn2"]["outcome"] == "missing"  # its judge prompt repeats turn 1
    assert out.extra["n_missing"] == 4 and out.n == 4
    assert out.extra["turn_1"] == 8.0 and out.extra["turn_2"] == 4.0
    assert out.value == pytest.approx((8 + 4 + 8 + 4) / 4)  # missing is not 0
    assert math.isnan(out.extra["category_stem"]) and out.extra["category_math"] == 6.0
    assert out.outcomes == {"error": 2, "missing": 2, "rated": 4}
    assert out.notes["judge"]["model"] == "j"
    # the re-run reuses every cached judgment; only the failed ones are asked again
    assert asked_again == 2 * 2  # 2 failed judgments x (1 try + 1 retry)
    assert again.value == out.value


def test_missing_judge_or_data_is_a_user_error(question_file):
    task = get_task("mt_bench")
    with pytest.raises(UserError, match="needs a judge"):
        task.check(TaskContext(shots=0, data=str(question_file)))
    with pytest.raises(UserError, match="shot"):
        task.check(TaskContext(shots=3, data=str(question_file),
                               options={"judge": {"base_url": "http://x/v1", "model": "m"}}))
    with pytest.raises(UserError, match="needs its questions"):
        load_questions(None)


def test_ja_mt_bench_prompts_are_japanese_and_fastchat_ones_merge_over_them(tmp_path):
    from sftlab.evaluate.tasks.registry import TASKS

    ours = load_judge_prompts(None, "ja_mt_bench.jsonl")
    assert set(ours) == {"single-v1", "single-v1-multi-turn", "single-math-v1",
                         "single-math-v1-multi-turn"}
    assert all("[[評価]]" in p["system_prompt"] + p["prompt_template"] for p in ours.values())
    fastchat = tmp_path / "judge_ja_prompts.jsonl"
    fastchat.write_text(json.dumps({"name": "single-v1", "type": "single",
                                    "system_prompt": "あなたは有益な助手です。",
                                    "prompt_template": "{question}{answer}",
                                    "output_format": "[[評価]]"}, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    merged = load_judge_prompts(fastchat, "ja_mt_bench.jsonl", merge=True)
    assert merged["single-v1"]["system_prompt"] == "あなたは有益な助手です。"
    assert merged["single-v1-multi-turn"] == ours["single-v1-multi-turn"]
    assert TASKS["ja_mt_bench"].judge and get_task("ja_mt_bench").merge_prompts
    assert parse_rating("評価：[[5]]") == 5.0


@pytest.mark.shared_data
def test_ja_mt_bench_reads_the_real_questions_and_references(shared_data):
    task = get_task("ja_mt_bench")
    ctx = TaskContext(shots=0, data=str(shared_data / "ja_mt_bench"),
                      options={"judge": {"base_url": "http://127.0.0.1:9/v1", "model": "j"},
                               "judge_prompts": str(shared_data / "ja_mt_bench" /
                                                    "judge_ja_prompts.jsonl")})
    questions, prompts = task._load(ctx)
    assert len(questions) == 80 and all(q.references for q in questions)
    assert prompts["single-v1"]["system_prompt"] == "あなたは有益な助手です。"
    assert "single-math-v1-multi-turn" in prompts
