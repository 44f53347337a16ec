"""sftlab's evaluator vs lm-evaluation-harness on the same model and the same items.

``--model`` takes any model source (``smollm2-135m``: the real SmolLM2-135M-Instruct,
converted once; default: a tiny random llama with an 8k context).

Tasks (lm-eval format): MMLU 5-shot (a few subjects), HellaSwag 10-shot (`--hellaswag-shots`) and BoolQ
0-shot (log-likelihood), GSM8K 4-shot (generation, small limit). Data comes from
``../shared/data``; both harnesses read the same local files (lm-eval through
custom task YAMLs with ``dataset_path: json``, written to a temp folder). Few-shot
examples are the first k of the few-shot split in both (``sampler: first_n``).

Prints per-item agreement of chosen answers (MC: argmax choice; GSM8K: extracted
answer), disagreements on exact ties, the largest per-choice log-likelihood difference,
each harness's score and the wall-time ratio (model loading excluded), then whether the
goals are met.
Needs ``pip install lm-eval`` (a benchmark-only dependency).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python benchmarks/eval_vs_lm_eval.py
    .venv/bin/python benchmarks/eval_vs_lm_eval.py --model smollm2-135m --whole-process

``--whole-process`` also times each task as a user runs it: ``sftlab eval`` against
``python -m lm_eval`` as separate processes (imports, model loading and writing
included), wall-clock at the machine's default threading and CPU seconds of the child.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' progress bars

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SUBJECTS = ("high_school_geography", "college_biology", "marketing")

HELLASWAG_UTILS = '''import re


def preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\\\[.*?\\\\]", "", text)
    text = text.replace("  ", " ")
    return text


def process_docs(dataset):
    def _process_doc(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": preprocess(doc["activity_label"] + ": " + ctx),
                "choices": [preprocess(e) for e in doc["endings"]], "gold": int(doc["label"])}
    return dataset.map(_process_doc)
'''


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_model() -> Path:
    """A tiny random Llama with an 8k context (so long few-shot prompts are not truncated)."""
    from sftlab.tinymodel import build_tiny_model

    out = REPO / ".cache" / "tiny-models" / "bench-llama-8k"
    if not (out / "sftlab_tiny.json").is_file():
        build_tiny_model("llama", out, max_position_embeddings=8192)
    return out


def write_data(root: Path, n_mmlu: int, n_hs: int, n_boolq: int) -> dict[str, Path]:
    """Local copies of the items, in shapes both harnesses read."""
    def mmlu_rows(name: str) -> list[dict]:
        with (SHARED / name).open() as fh:
            return [{"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                     "answer": int(r["answer"]), "subject": r["subject"]} for r in csv.DictReader(fh)]

    test, dev = mmlu_rows("mmlu_test.csv"), mmlu_rows("mmlu_dev.csv")
    paths: dict[str, Path] = {}
    mmlu_dir = root / "mmlu"
    mmlu_dir.mkdir()
    all_test, all_dev = [], []
    for s in SUBJECTS:
        t = [r for r in test if r["subject"] == s][:n_mmlu]
        d = [r for r in dev if r["subject"] == s]
        paths[f"mmlu_{s}_test"], paths[f"mmlu_{s}_dev"] = (jsonl(root / f"l_mmlu_{s}_test.jsonl", t),
                                                          jsonl(root / f"l_mmlu_{s}_dev.jsonl", d))
        all_test += t
        all_dev += d
    jsonl(mmlu_dir / "mmlu_test.jsonl", all_test)
    jsonl(mmlu_dir / "mmlu_dev.jsonl", all_dev)
    paths["mmlu"] = mmlu_dir
    hs = [json.loads(x) for x in (SHARED / "hellaswag_val_subset.jsonl").read_text().splitlines()]
    hs_dir = root / "hellaswag"
    hs_dir.mkdir()
    for r in hs:
        r["label"] = int(r["label"])
    paths["hs_train"] = jsonl(hs_dir / "hellaswag_train.jsonl", hs[:10])
    paths["hs_val"] = jsonl(hs_dir / "hellaswag_val.jsonl", hs[10 : 10 + n_hs])
    paths["hellaswag"] = hs_dir
    bq = [json.loads(x) for x in (SHARED / "boolq_dev_parsed.jsonl").read_text().splitlines()]
    paths["boolq"] = jsonl(root / "boolq_dev.jsonl",
                           [r | {"label": int(r["answer"])} for r in bq[:n_boolq]])
    paths["gsm8k"] = SHARED
    return paths


def write_yamls(root: Path, p: dict[str, Path]) -> Path:
    """Custom lm-eval task YAMLs reading the local files."""
    inc = root / "tasks"
    inc.mkdir()
    for s in SUBJECTS:
        (inc / f"mmlu_{s}.yaml").write_text(json.dumps({
            "task": f"local_mmlu_{s}", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(p[f"mmlu_{s}_test"]),
                                              "dev": str(p[f"mmlu_{s}_dev"])}},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{s.replace('_', ' ')}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
                           "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}))
    (inc / "utils.py").write_text(HELLASWAG_UTILS)
    (inc / "hellaswag.yaml").write_text(
        "task: local_hellaswag\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    train: {p['hs_train']}\n    validation: {p['hs_val']}\n"
        "output_type: multiple_choice\ntraining_split: train\nvalidation_split: validation\n"
        "fewshot_split: train\nfewshot_config:\n  sampler: first_n\n"
        "process_docs: !function utils.process_docs\ndoc_to_text: \"{{query}}\"\n"
        "doc_to_target: \"{{label}}\"\ndoc_to_choice: \"choices\"\nmetric_list:\n"
        "  - metric: acc\n  - metric: acc_norm\n")
    (inc / "boolq.yaml").write_text(json.dumps({
        "task": "local_boolq", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(p["boolq"])}},
        "output_type": "multiple_choice", "validation_split": "validation",
        "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
        "doc_to_target": "label", "doc_to_choice": ["no", "yes"],
        "metric_list": [{"metric": "acc"}]}))
    (inc / "gsm8k.yaml").write_text(json.dumps({
        "task": "local_gsm8k", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(SHARED / "gsm8k_train.jsonl"),
                                          "test": str(SHARED / "gsm8k_test.jsonl")}},
        "output_type": "generate_until", "training_split": "train", "fewshot_split": "train",
        "test_split": "test", "fewshot_config": {"sampler": "first_n"},
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False,
                              "temperature": 0.0, "max_gen_toks": 256},
        "filter_list": [{"name": "strict-match", "filter": [
            {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}]}))
    return inc


def run_lm_eval(lm, manager, tasks: list[str], shots: int, limit: int | None) -> tuple[list, float]:
    """Per-item picks (MC argmax / extracted answer) and the mean score, plus seconds."""
    import lm_eval

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, limit=limit,
                                  task_manager=manager, log_samples=True, bootstrap_iters=0)
    elapsed = time.perf_counter() - start
    rows = []  # (pick, score, per-choice log-likelihoods or None)
    for t in tasks:
        for s in sorted(out["samples"][t], key=lambda x: x["doc_id"]):
            if s.get("filter", "none") not in ("none", "strict-match"):
                continue
            resp = s["filtered_resps"]
            if isinstance(resp[0], (list, tuple)):  # multiple choice: (ll, greedy) per choice
                lls = [float(r[0]) for r in resp]
                rows.append((max(range(len(lls)), key=lls.__getitem__), float(s["acc"]), lls))
            else:
                rows.append((resp[0], float(s["exact_match"]), None))
    return rows, elapsed


def run_sftlab(backend, task: str, shots: int, data: Path, limit: int | None) -> tuple[list, float]:
    from sftlab.evaluate.tasks.base import TaskContext, get_task

    t = get_task(task)
    start = time.perf_counter()
    out = t.run(backend, TaskContext(shots=shots, format="lm-eval", data=str(data), limit=limit))
    elapsed = time.perf_counter() - start
    rows = []
    for r in out.rows:
        if task == "gsm8k":
            pick = r["extracted"] if r["extracted"] is not None else "[invalid]"
            rows.append((pick, r["score"], None))
        else:
            lls = r["logprobs"]
            rows.append((max(range(len(lls)), key=lls.__getitem__), r["score"], lls))
    return rows, elapsed


def timed_process(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(model: Path, name: str, shots: int, lm_tasks: list[str], data: Path,
                  limit: int | None, include: Path, batch: int, out: Path) -> dict:
    """``sftlab eval`` and ``python -m lm_eval`` on one task, as separate processes."""
    bin_dir = Path(sys.executable).parent
    ours = [str(bin_dir / "sftlab"), "eval", "--model", str(model), "--task", f"{name}:{shots}",
            "--format", "lm-eval", "--data", str(data), "--batch-size", str(batch),
            "--out", str(out / f"sftlab-{name}"), "--device", "cpu", "--json"]
    theirs = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
              f"pretrained={model},dtype=float32", "--tasks", ",".join(lm_tasks),
              "--num_fewshot", str(shots), "--include_path", str(include), "--batch_size",
              str(batch), "--device", "cpu", "--output_path", str(out / f"lm-eval-{name}")]
    if limit is not None:
        ours += ["--limit", str(limit)]
        theirs += ["--limit", str(limit)]
    wall_us, cpu_us = timed_process(ours)
    wall_lm, cpu_lm = timed_process(theirs)
    return {"task": name, "shots": shots, "sftlab_wall_s": round(wall_us, 1),
            "lm_eval_wall_s": round(wall_lm, 1), "speedup_wall": round(wall_lm / wall_us, 2),
            "sftlab_cpu_s": round(cpu_us, 1), "lm_eval_cpu_s": round(cpu_lm, 1),
            "speedup_cpu": round(cpu_lm / cpu_us, 2)}


def compare(mine: list, theirs: list) -> tuple[int, int, int, float]:
    """(items, same pick, different pick on an exact tie, max |log-likelihood difference|).

    A tie: the two picks have log-likelihoods within 1e-6 in either harness."""
    n = min(len(mine), len(theirs))
    same = ties = 0
    max_diff = 0.0
    for (p1, _, l1), (p2, _, l2) in zip(mine[:n], theirs[:n], strict=True):
        if p1 == p2:
            same += 1
        elif l1 is not None and (abs(l1[p1] - l1[p2]) < 1e-6 or abs(l2[p1] - l2[p2]) < 1e-6):
            ties += 1
        if l1 is not None:
            max_diff = max(max_diff, max(abs(a - b) for a, b in zip(l1, l2, strict=True)))
    return n, same, ties, max_diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmlu", type=int, default=40, help="items per MMLU subject")
    ap.add_argument("--hellaswag", type=int, default=100)
    ap.add_argument("--hellaswag-shots", type=int, default=10,
                    help="HellaSwag's shot count (0: the zero-shot case, four endings of one "
                         "context scored once)")
    ap.add_argument("--boolq", type=int, default=200)
    ap.add_argument("--gsm8k", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default=None, help="model source (folder, hub id, .gguf, pkg:, "
                    "alias such as smollm2-135m); default: a tiny random llama")
    ap.add_argument("--whole-process", action="store_true",
                    help="also time `sftlab eval` against `python -m lm_eval` as whole processes")
    ap.add_argument("--tasks", default="mmlu,hellaswag,boolq,gsm8k",
                    help="comma-separated subset of mmlu, hellaswag, boolq, gsm8k")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs {SHARED}")
    import logging

    import datasets
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval.tasks import TaskManager

    from sftlab.evaluate.backends.hf import HFBackend

    torch.manual_seed(0)
    if args.model:
        from sftlab.models.sources import resolve_model_source

        model = Path(resolve_model_source(args.model))
    else:
        model = tiny_model()
    print(f"model: {args.model or 'tiny llama'} ({model}); torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        p = write_data(root, args.mmlu, args.hellaswag, args.boolq)
        include = write_yamls(root, p)
        manager = TaskManager(include_path=str(include))
        lm = HFLM(pretrained=str(model), dtype="float32", device="cpu", batch_size=args.batch_size)
        ours = HFBackend(str(model), device="cpu", dtype="float32", batch_size=args.batch_size,
                         add_special_tokens=False)  # lm-eval's default: no BOS
        plan = [("mmlu", 5, [f"local_mmlu_{s}" for s in SUBJECTS], p["mmlu"], None),
                ("hellaswag", args.hellaswag_shots, ["local_hellaswag"], p["hellaswag"], None),
                ("boolq", 0, ["local_boolq"], p["boolq"], None),
                ("gsm8k", 4, ["local_gsm8k"], p["gsm8k"], args.gsm8k)]
        wanted = args.tasks.split(",")
        plan = [row for row in plan if row[0] in wanted]
        results: list[dict] = []
        # warm up both (first forward passes, lazy initialisation) before timing anything
        run_lm_eval(lm, manager, ["local_boolq"], 0, 2)
        run_sftlab(ours, "boolq", 0, p["boolq"], 2)
        print(f"{'task':<10}{'shots':>6}{'n':>6}{'agree':>8}{'ties':>6}{'max|dLL|':>10}"
              f"{'sftlab':>9}{'lm-eval':>9}{'t_sftlab':>10}{'t_lmeval':>10}{'speedup':>9}")
        goals = []
        for name, shots, lm_tasks, data, limit in plan:
            theirs, t_lm = run_lm_eval(lm, manager, lm_tasks, shots, limit)
            mine, t_us = run_sftlab(ours, name, shots, data, limit)
            n, same, ties, max_diff = compare(mine, theirs)
            s_us = 100 * sum(x[1] for x in mine[:n]) / n
            s_lm = 100 * sum(x[1] for x in theirs[:n]) / n
            dll = f"{max_diff:.1e}" if mine[0][2] is not None else "-"
            print(f"{name:<10}{shots:>6}{n:>6}{same / n:>8.1%}{ties:>6}{dll:>10}{s_us:>9.2f}"
                  f"{s_lm:>9.2f}{t_us:>10.2f}{t_lm:>10.2f}{t_lm / t_us:>8.1f}x", flush=True)
            want = 5 if shots > 0 and name != "gsm8k" else 2
            goals.append(same + ties == n and abs(s_us - s_lm) <= 0.5 and t_lm / t_us >= want)
            results.append({"task": name, "shots": shots, "n": n, "agree": same, "ties": ties,
                            "sftlab": round(s_us, 2), "lm_eval": round(s_lm, 2),
                            "sftlab_s": round(t_us, 2), "lm_eval_s": round(t_lm, 2),
                            "speedup": round(t_lm / t_us, 2)})
        print("goals (same picks except exact ties, scores within 0.5 points, >= 5x on few-shot "
              "log-likelihood tasks, >= 2x on zero-shot ones and on GSM8K): "
              f"{'met' if all(goals) else 'NOT met'}")
        if args.whole_process:
            del lm, ours
            print("whole processes (imports, model loading, writing included):")
            print(f"{'task':<10}{'shots':>6}{'sftlab s':>10}{'lm-eval s':>10}{'speedup':>9}"
                  f"{'sftlab cpu':>11}{'lm-eval cpu':>12}{'cpu ratio':>10}")
            for name, shots, lm_tasks, data, limit in plan:
                row = whole_process(model, name, shots, lm_tasks, data, limit, include,
                                    args.batch_size, root / "out")
                results.append({"whole_process": True, **row})
                print(f"{name:<10}{shots:>6}{row['sftlab_wall_s']:>10}{row['lm_eval_wall_s']:>10}"
                      f"{row['speedup_wall']:>8.2f}x{row['sftlab_cpu_s']:>11}"
                      f"{row['lm_eval_cpu_s']:>12}{row['speedup_cpu']:>9.2f}x", flush=True)
        if args.json:
            print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
