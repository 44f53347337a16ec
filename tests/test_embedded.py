"""Embedded quickstart data: deterministic, native shapes, correct answers, disjoint splits."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from sftlab.data.embedded import (
    FACTS,
    NQ_PHRASINGS,
    NQ_SHOTS,
    embedded_splits,
    nq_open_rows,
    nq_open_splits,
    write_embedded_data,
)
from sftlab.errors import UserError

N_TRAIN, N_EVAL = 300, 40

# embedded file stem -> the real file in ../shared/data with the same shape
REAL_SHAPES = {
    "alpaca_data": "alpaca_first200.json",
    "gsm8k_train": "gsm8k_train.jsonl",
    "gsm8k_test": "gsm8k_test.jsonl",
    "mbpp": "mbpp.jsonl",
    "code_tasks": "mbpp.jsonl",
    "mmlu_dev": "mmlu_dev.csv",
    "mmlu_test": "mmlu_test.csv",
    "mmlu_train": "mmlu_dev.csv",
    "boolq_dev": "boolq_dev_parsed.jsonl",
    "boolq_train": "boolq_dev_parsed.jsonl",
    "hellaswag_val": "hellaswag_val_subset.jsonl",
    "hellaswag_train": "hellaswag_val_subset.jsonl",
    "nq_open_dev": "nq_open_dev.jsonl",
    "nq_open_train": "nq_open_dev.jsonl",
}


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    return write_embedded_data(tmp_path_factory.mktemp("emb"), n_train=N_TRAIN, n_eval=N_EVAL)


@pytest.fixture(scope="module")
def data(paths) -> dict[str, list[dict]]:
    return {name: read_rows(path) for name, path in paths.items()}


#: The real-model demo's invented facts (sftlab.data.demo_facts) and the RL arithmetic
#: prompts (sftlab.data.arithmetic_rl): fixed, not seeded by the quickstart seed.
DEMO_FILES = {"demo_facts", "demo_questions", "arithmetic_rl"}


def test_files_and_sizes(paths, data):
    assert set(paths) == set(REAL_SHAPES) | DEMO_FILES
    assert not [p for p in paths["gsm8k_test"].parent.iterdir() if p.name.startswith(".")]
    for name in ("alpaca_data", "gsm8k_train", "code_tasks", "mmlu_train"):
        assert len(data[name]) == N_TRAIN, name
    for name in ("gsm8k_test", "mmlu_test", "boolq_dev", "hellaswag_val", "nq_open_dev"):
        assert len(data[name]) == N_EVAL, name
    assert [r["task_id"] for r in data["mbpp"]] == list(range(1, 11 + N_EVAL))
    assert data["code_tasks"][0]["task_id"] == 601
    subjects = [r["subject"] for r in data["mmlu_dev"]]
    assert all(subjects.count(s) == 5 for s in set(subjects)) and len(set(subjects)) >= 3
    assert len(data["nq_open_train"]) >= 25


def test_byte_identical_rerun_and_seed_changes_content(paths, tmp_path):
    again = write_embedded_data(tmp_path / "a", n_train=N_TRAIN, n_eval=N_EVAL)
    other = write_embedded_data(tmp_path / "b", seed=1, n_train=N_TRAIN, n_eval=N_EVAL)
    for name, path in paths.items():
        assert again[name].read_bytes() == path.read_bytes(), name
        if name not in DEMO_FILES:
            assert other[name].read_bytes() != path.read_bytes(), name


def test_shapes_match_real_files(data, shared_data):
    for name, real_name in REAL_SHAPES.items():
        real = read_rows_head(shared_data / real_name)
        ours = data[name][0]
        if name.startswith("hellaswag"):  # the real subset carries the full original schema
            assert set(ours) <= set(real), name
        else:
            assert set(ours) == set(real), name
        for key in ours:
            assert type(ours[key]) is type(real[key]), (name, key)


def read_rows_head(path: Path) -> dict:
    if path.suffix == ".jsonl":
        with path.open() as fh:
            return json.loads(fh.readline())
    return read_rows(path)[0]


def test_eval_splits_disjoint_from_training_rows(data):
    def keys(name: str, key) -> set[str]:
        return {key(r) for r in data[name]}

    q = lambda r: r["question"]  # noqa: E731
    whole = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert not keys("gsm8k_test", q) & keys("gsm8k_train", q)
    text = lambda r: r["text"]  # noqa: E731
    assert not keys("mbpp", text) & keys("code_tasks", text)
    assert not keys("mmlu_test", whole) & (keys("mmlu_train", whole) | keys("mmlu_dev", whole))
    qp = lambda r: r["question"] + r["passage"]  # noqa: E731
    assert not keys("boolq_dev", qp) & keys("boolq_train", qp)
    ce = lambda r: r["ctx"] + "|".join(r["endings"])  # noqa: E731
    assert not keys("hellaswag_val", ce) & keys("hellaswag_train", ce)
    assert not keys("nq_open_dev", q) & keys("nq_open_train", q)
    for name, rows in data.items():
        assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows), name


def test_gsm8k_reasoning_and_final_answer_are_right(data):
    for row in data["gsm8k_train"] + data["gsm8k_test"]:
        lines = row["answer"].split("\n")
        final = re.fullmatch(r"#### (\d+)", lines[-1])
        assert final, row
        calcs = re.findall(r"<<([0-9+\-*]+)=(\d+)>>(\d+)", row["answer"])
        assert calcs, row
        for expr, result, shown in calcs:
            assert eval(expr) == int(result) == int(shown), row  # noqa: S307 - digits and +-*
        assert int(final.group(1)) == int(calcs[-1][1])
        numbers = set(re.findall(r"\d+", row["question"])) | {r for _, r, _ in calcs}
        for expr, _, _ in calcs:
            assert set(re.findall(r"\d+", expr)) <= numbers, row


def test_mbpp_code_passes_its_tests(data):
    for row in data["mbpp"] + data["code_tasks"]:
        scope: dict = {}
        exec(row["code"] + "\n" + "\n".join(row["test_list"]), scope)  # noqa: S102 - our code
        assert len(row["test_list"]) == 3


def test_mmlu_answers_are_right(data):
    for row in data["mmlu_dev"] + data["mmlu_test"] + data["mmlu_train"]:
        choices = [row[f"choice{i}"] for i in range(4)]
        assert len(set(choices)) == 4, row
        right = choices[int(row["answer"])]
        question = row["question"]
        if m := re.fullmatch(r"What is (\d+) \+ (\d+)\?", question):
            assert int(right) == int(m[1]) + int(m[2])
        elif m := re.fullmatch(r"What is (\d+) times (\d+)\?", question):
            assert int(right) == int(m[1]) * int(m[2])
        elif m := re.fullmatch(r"What does the Python expression len\('(\w+)'\) return\?", question):
            assert int(right) == len(m[1])
        else:
            assert right == min(choices), row


def test_boolq_hellaswag_nq_answers_are_right(data):
    for row in data["boolq_dev"] + data["boolq_train"]:
        subject = re.match(r"(?:does|is) (\w+)", row["question"])[1].capitalize()
        m = re.search(r"live in a (\w+) house|house near the (\w+)", row["question"])
        fact = f"lives in a {m[1]} house" if m[1] else f"near the {m[2]}."
        assert (fact in row["passage"] and subject in row["passage"]) == row["answer"], row
    assert 0.3 < sum(r["answer"] for r in data["boolq_dev"]) / N_EVAL < 0.7
    answers = {(r, subject): answer for r, facts in FACTS.items() for subject, answer in facts}
    for row in data["hellaswag_val"] + data["hellaswag_train"]:
        relation, subject = fact_of(row["ctx_b"])
        assert row["endings"][row["label"]] == answers[relation, subject] + "."
        assert len(set(row["endings"])) == 4
        assert all(e[:-1] in {a for (r, _), a in answers.items() if r == relation}
                   for e in row["endings"]), row
        assert row["ctx"] == f"{row['ctx_a']} {row['ctx_b']}"
    for row in data["nq_open_dev"] + data["nq_open_train"]:
        assert row["answer"] == [answers[fact_of(row["question"])]], row


def fact_of(text: str) -> tuple[str, str]:
    """The (relation, subject) a question or cloze stem is about (exactly one)."""
    found = {(r, s) for r, facts in FACTS.items() for s, _ in facts
             if re.search(rf"\b{s}\b", text, re.IGNORECASE)}
    assert len(found) == 1, (text, found)
    return found.pop()


def test_alpaca_rows_teach_the_facts_that_nq_open_tests(data):
    """Every fact the NQ-open split asks is taught by Alpaca rows, always in other words."""
    answers = {(r, subject): answer for r, facts in FACTS.items() for subject, answer in facts}
    taught: set[tuple[str, str]] = set()
    def norm(text: str) -> str:
        return re.sub(r"[^a-z ]", "", text.lower()).strip()

    wordings = set()
    for row in data["alpaca_data"]:
        fact = fact_of(row["instruction"] + " " + row["input"])
        assert row["output"].rstrip(".").lower() == answers[fact].lower(), row
        taught.add(fact)
        wordings.add(norm(row["instruction"]))
    assert taught == set(answers)
    for row in data["nq_open_dev"]:
        assert norm(row["question"]) not in wordings, row
    assert len(data["nq_open_dev"]) == N_EVAL


def test_nq_open_dev_is_capped_by_the_closed_set_of_questions():
    total = sum(len(f) * len(NQ_PHRASINGS[r]) for r, f in FACTS.items())
    assert len({r["question"] for r in nq_open_rows()}) == total
    splits = nq_open_splits(seed=0, n_eval=1000)
    assert len(splits["nq_open_dev"]) == total - NQ_SHOTS >= 80  # the quickstart uses 60
    assert len(splits["nq_open_train"]) == NQ_SHOTS


def test_answers_are_unambiguous_under_substring_match():
    answers = [a.lower() for facts in FACTS.values() for _, a in facts]
    subjects = [s.lower() for facts in FACTS.values() for s, _ in facts]
    for a in answers:
        assert [b for b in answers + subjects if a in b] == [a], a


def test_too_many_rows_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="distinct rows"):
        write_embedded_data(tmp_path / "x", n_train=10, n_eval=5000)
    assert not (tmp_path / "x").exists()


def test_tiny_model_learns_embedded_data_quickly(tiny_llama):
    """100 small steps on the training sources halve the loss on held-out GSM8K answers."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    splits = embedded_splits(n_train=400, n_eval=40)
    train = [(r["instruction"] + ("\n" + r["input"] if r["input"] else ""), r["output"])
             for r in splits["alpaca_data"]]
    train += [(r["question"], r["answer"]) for r in splits["gsm8k_train"]]
    held_out = [(r["question"], r["answer"]) for r in splits["gsm8k_test"]]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)

    def loss_on(rows: list[tuple[str, str]]) -> torch.Tensor:
        ids, labels = [], []
        for instruction, response in rows:
            prompt = tok(f"###Question: {instruction}\n\n###Answer: ").input_ids
            answer = tok(response, add_special_tokens=False).input_ids + [tok.eos_token_id]
            ids.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        width = max(map(len, ids))
        x = torch.tensor([a + [tok.pad_token_id] * (width - len(a)) for a in ids])
        y = torch.tensor([b + [-100] * (width - len(b)) for b in labels])
        return model(input_ids=x, attention_mask=(x != tok.pad_token_id).long(), labels=y).loss

    with torch.no_grad():
        before = loss_on(held_out).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    for _ in range(100):
        loss_on(rng.sample(train, 16)).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = loss_on(held_out).item()
    assert after < 0.5 * before, (before, after)


def test_arithmetic_rl_prompts_have_exact_answers(data):
    import re

    rows = data["arithmetic_rl"]
    assert len(rows) == len({r["prompt"] for r in rows}) == 19 * 19 + 190 + 64
    for row in rows:
        a, op, b = re.fullmatch(r'What is (\d+) ([-+*]) (\d+)\? End your reply with "The '
                                r'answer is" and the number\.', row["prompt"]).groups()
        assert int(row["answer"]) == eval(f"{a} {op} {b}") >= 0  # noqa: S307
