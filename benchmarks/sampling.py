"""Repeated sampling: sftlab vs lm-evaluation-harness's ``repeats`` on GSM8K, side by side.

Both draw ``--samples`` samples per item (lm-eval: ``repeats: n`` with ``do_sample``)
at the same temperature, top-p, shot count and token cap, on the same model and the
same items (``../shared/data/gsm8k_*.jsonl``, lm-eval format: ``Question: ...\\nAnswer:``,
first k train items as shots). sftlab computes each prompt's prefill once for its n
samples (:mod:`sftlab.models.generation`); lm-eval generates every repeat as its own
request. Printed per harness: seconds (model loading excluded), generated tokens (lm-eval:
its outputs re-tokenised), tokens per second, and sftlab's pass@k / cons@k / maj@k; then
the throughput ratio at the same number of sampled tokens (goal >= 3x).

Needs ``pip install lm-eval`` (a benchmark-only dependency). Tiny run on a CPU:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/sampling.py --items 2 --samples 4 \\
        --max-new-tokens 16
    .venv/bin/python benchmarks/sampling.py --model smollm2-135m --device cuda --items 32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def write_inputs(root: Path, items: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """The first ``items`` test items (one folder for both harnesses) and lm-eval's YAML."""
    data = root / "data"
    data.mkdir()
    test = (SHARED / "gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines()[:items]
    (data / "gsm8k_test.jsonl").write_text("\n".join(test) + "\n", encoding="utf-8")
    (data / "gsm8k_train.jsonl").write_text((SHARED / "gsm8k_train.jsonl").read_text())
    include = root / "tasks"
    include.mkdir()
    (include / "gsm8k_repeats.yaml").write_text(json.dumps({
        "task": "local_gsm8k_repeats", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(data / "gsm8k_train.jsonl"),
                                          "test": str(data / "gsm8k_test.jsonl")}},
        "output_type": "generate_until", "training_split": "train", "fewshot_split": "train",
        "test_split": "test", "fewshot_config": {"sampler": "first_n"},
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}",
        "repeats": args.samples,
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": True,
                              "temperature": args.temperature, "top_p": args.top_p,
                              "max_gen_toks": args.max_new_tokens},
        "filter_list": [{"name": "maj", "filter": [
            {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
            {"function": "majority_vote"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}]}))
    return data, include


def run_sftlab(backend, data: Path, args: argparse.Namespace) -> dict:
    from sftlab.evaluate.tasks.base import TaskContext, get_task

    task = get_task("gsm8k")
    options = {"samples": args.samples, "temperature": args.temperature, "top_p": args.top_p,
               "max_new_tokens": args.max_new_tokens}
    ctx = TaskContext(shots=args.shots, format="lm-eval", data=str(data), seed=args.seed,
                      options=options)
    task.preflight(ctx)
    start = time.perf_counter()
    out = task.run(backend, ctx)
    seconds = time.perf_counter() - start
    tokens = sum(s.get("tokens", 0) for r in out.rows for s in r.get("samples", []))
    metrics = {k: round(v, 2) for k, v in out.extra.items()
               if "@" in k and not k.endswith("_stderr")}
    return {"seconds": seconds, "tokens": tokens, "metrics": metrics}


def run_lm_eval(lm, manager, tokenizer, args: argparse.Namespace) -> dict:
    import lm_eval

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=["local_gsm8k_repeats"], num_fewshot=args.shots,
                                  task_manager=manager, log_samples=True, bootstrap_iters=0,
                                  random_seed=args.seed, torch_random_seed=args.seed)
    seconds = time.perf_counter() - start
    tokens = 0
    for s in out["samples"]["local_gsm8k_repeats"]:
        for texts in s["resps"]:
            tokens += sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    maj = out["results"]["local_gsm8k_repeats"].get("exact_match,maj")
    return {"seconds": seconds, "tokens": tokens,
            "metrics": {f"maj@{args.samples} (lm-eval strict)": round(100 * float(maj), 2)
                        if maj is not None else None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model source (default: a tiny random llama)")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import datasets
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from sftlab.evaluate.backends.hf import HFBackend

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if args.model:
        from sftlab.models.sources import resolve_model_source

        model = Path(resolve_model_source(args.model))
    else:
        from sftlab.tinymodel import build_tiny_model

        model = REPO / ".cache" / "tiny-models" / "bench-llama-8k"
        if not (model / "sftlab_tiny.json").is_file():
            build_tiny_model("llama", model, max_position_embeddings=8192)
    dtype = "float32" if args.device == "cpu" else "bfloat16"
    print(f"model: {args.model or 'tiny llama'}; GSM8K {args.items} items x {args.samples} "
          f"samples, {args.shots}-shot, <= {args.max_new_tokens} new tokens, "
          f"T={args.temperature} top-p={args.top_p}, {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        data, include = write_inputs(Path(tmp), args.items, args)
        ours = HFBackend(str(model), device=args.device, dtype=dtype, batch_size=args.batch_size,
                         add_special_tokens=False)
        mine = run_sftlab(ours, data, args)
        del ours
        lm = HFLM(pretrained=str(model), dtype=dtype, device=args.device,
                  batch_size=args.batch_size)
        theirs = run_lm_eval(lm, TaskManager(include_path=str(include)), lm.tokenizer, args)
    print(f"{'harness':<10} {'seconds':>9} {'tokens':>9} {'tokens/s':>10}  metrics")
    for name, r in (("sftlab", mine), ("lm-eval", theirs)):
        rate = r["tokens"] / r["seconds"] if r["seconds"] else float("nan")
        r["rate"] = rate
        print(f"{name:<10} {r['seconds']:>9.2f} {r['tokens']:>9d} {rate:>10.1f}  {r['metrics']}")
    ratio = mine["rate"] / theirs["rate"] if theirs["rate"] else float("nan")
    print(f"throughput ratio at the same sampled tokens (sftlab / lm-eval): {ratio:.2f}x "
          f"(goal >= 3x: {'met' if ratio >= 3 else 'not met'})")


if __name__ == "__main__":
    main()
