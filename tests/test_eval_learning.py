"""The evaluator sees learning: a tiny model taught the answers scores 100, the untaught one
does not.

The training prompts are built by the tasks themselves (``task.build``), so this checks
that what ``sftlab eval`` asks, generates, stops, extracts and scores lines up with what
a model trained on the benchmark's format produces: a generation task (GSM8K, lm-eval
strict ``#### N``) and a log-likelihood task (MMLU, the gold letter).
"""

from __future__ import annotations

import json

from eval_fixtures import write_benchmarks

from sftlab.cli import main
from sftlab.evaluate.tasks.base import TaskContext, get_task

TASKS = [("gsm8k", "lm-eval", None), ("mmlu", "opencompass", "ppl")]  # MMLU: by likelihood


def _examples(data) -> list[tuple[str, str]]:
    """(prompt, answer) pairs: each evaluation item's prompt with its reference answer."""
    pairs = []
    for name, fmt, config in TASKS:
        loaded, queries = get_task(name).build(TaskContext(shots=0, format=fmt, data=str(data),
                                                           config=config))
        for item, q in zip(loaded.items, queries, strict=True):
            if name == "gsm8k":
                pairs.append((q.prompt, " " + item.doc["answer"]))
            else:
                pairs.append((q.context, q.choices[q.gold]))
    return pairs


def _teach(base, out, pairs, steps: int = 120) -> None:
    """Fit the model to the answers (loss on the answer tokens + EOS only) and save it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = []
    for prompt, answer in pairs:
        n_prompt = len(tok(prompt)["input_ids"])
        ids = tok(prompt + answer)["input_ids"] + [tok.eos_token_id]
        rows.append((torch.tensor([ids]), torch.tensor([[-100] * n_prompt + ids[n_prompt:]])))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(model(input_ids=ids, labels=labels).loss for ids, labels in rows)
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _scores(model, data, out, capsys) -> dict[str, float]:
    scores = {}
    for name, fmt, config in TASKS:
        code = main(["eval", "--model", str(model), "--data", str(data), "--task", f"{name}:0",
                     "--format", fmt, "--out", str(out), "--json",
                     *(["--config", config] if config else [])])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        [result] = json.loads(captured.out)["results"]
        scores[name] = result["value"]
    return scores


def test_taught_model_scores_100_and_untaught_does_not(tiny_llama, tmp_path, capsys):
    data = write_benchmarks(tmp_path / "bench")
    taught = tmp_path / "taught"
    _teach(tiny_llama, taught, _examples(data))
    before = _scores(tiny_llama, data, tmp_path / "before", capsys)
    after = _scores(taught, data, tmp_path / "after", capsys)
    assert after == {"gsm8k": 100.0, "mmlu": 100.0}, after
    assert before["gsm8k"] == 0.0 and before["mmlu"] < 100.0, before
    rows = [json.loads(x) for x in
            (tmp_path / "after" / "gsm8k-0shot-lm-eval.jsonl").read_text().splitlines()]
    assert all(r["correct"] and r["output"].rstrip().endswith(r["extracted"]) for r in rows)
