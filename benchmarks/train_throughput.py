"""Training throughput: sftlab vs TRL defaults vs TRL padding-free packing, side by side.

The same model (``--model``: a model source such as ``smollm2-135m``, the real
SmolLM2-135M-Instruct; default a tiny llama of ``--hidden``/``--layers``), the same data
(``../shared/data/code_alpaca_2k.json`` when present, else a generated set with a
similar spread of lengths), the same hyperparameters (effective batch, micro-batch,
learning rate, schedule, epochs, seed, precision, max length), trained three ways:

* ``sftlab``: ``sftlab.train`` (length-grouped optimizer steps, prompt/completion
  tokenised apart, on CPU the loss's output head at labelled positions only, TRL
  ``SFTTrainer`` underneath);
* ``trl-default``: TRL ``SFTTrainer`` on prompt/completion data with its default
  batching (random order, pad to the longest in each micro-batch);
* ``trl-packed``: TRL with ``packing=True`` (BFD) + ``padding_free=True``; the
  number of packed rows per micro-batch is chosen to carry about as many tokens
  as the others' micro-batches.

Prints non-padding tokens per second of training-loop wall time and per CPU
second of this process (robust when other jobs share the CPU), the padding
fraction of processed tokens, the mean training loss over the last quarter of
steps, and the loss of each final model on the same held-out rows.

    .venv/bin/python benchmarks/train_throughput.py [--rows 512] [--epochs 1]
    .venv/bin/python benchmarks/train_throughput.py --model smollm2-135m --methods full,lora \
        --rows 128 --skip-packed

``--methods full,lora`` trains each method both ways (LoRA: the same PEFT config,
``r=16, alpha=32, all-linear``, given to sftlab and to TRL's ``peft_config``).

On a GPU (``--device cuda``) it also reports model FLOPs utilisation for a
model of ``--hidden``/``--layers`` size in bf16 (``--mfu-only`` skips the TRL runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "code_alpaca_2k.json"
TEMPLATE_PROMPT = "###Question: {instruction}\n\n###Answer: "


class CountingCollator:
    """Wraps a collator; counts real and processed (incl. padding) tokens."""

    def __init__(self, inner, pad_id: int):
        self.inner, self.pad_id = inner, pad_id
        self.real = self.processed = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        ids = batch["input_ids"]
        self.processed += ids.numel()
        if "attention_mask" in batch:
            self.real += int(batch["attention_mask"].sum())
        else:  # padding-free: one flat row, no padding (pad_to_multiple_of is off)
            self.real += ids.numel()
        return batch


def load_rows(n: int, seed: int) -> tuple[list[dict], str]:
    """``n`` prompt/completion rows: real CodeAlpaca when present, else generated."""
    if DATA.is_file():
        raw = json.loads(DATA.read_text())
        rows = [{"prompt": TEMPLATE_PROMPT.format(
                    instruction=(r["instruction"] + "\n" + r.get("input", "")).strip()),
                 "completion": r["output"]} for r in raw]
        source = str(DATA)
    else:
        rng = random.Random(seed)
        words = "def return value list the for in if else print sum data item count".split()
        rows = []
        for _ in range(2000):
            q = " ".join(rng.choices(words, k=int(rng.lognormvariate(2.5, 0.6)) + 3))
            a = " ".join(rng.choices(words, k=int(rng.lognormvariate(3.3, 1.0)) + 1))
            rows.append({"prompt": TEMPLATE_PROMPT.format(instruction=q), "completion": a})
        source = "generated (lognormal lengths)"
    random.Random(seed).shuffle(rows)
    return rows[:n], source


def build_model(workdir: Path, hidden: int, layers: int) -> Path:
    from sftlab.tinymodel import build_tiny_model

    return build_tiny_model("llama", workdir / "model", hidden_size=hidden, num_layers=layers,
                            num_heads=max(4, hidden // 64), num_kv_heads=max(2, hidden // 128),
                            intermediate_size=hidden * 8 // 3 // 8 * 8)


def common_args(a) -> dict:
    return dict(learning_rate=a.lr, num_train_epochs=a.epochs, seed=a.seed, lr_scheduler_type="cosine",
                warmup_steps=0.03, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1,
                report_to="none", disable_tqdm=True, save_strategy="no", bf16=a.device == "cuda",
                activation_checkpointing=False, use_cpu=a.device == "cpu",
                dataloader_pin_memory=False)


LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")


def run_sftlab(model: Path, rows, a, workdir: Path, method: str = "full"):
    from sftlab.train import TrainConfig
    from sftlab.train.trainer import build_trainer

    cfg = TrainConfig.of(method_type=method, learning_rate=a.lr, batch_size=a.batch_size,
                      micro_batch_size=a.micro_batch_size, epochs=a.epochs, seed=a.seed,
                      lr_scheduler="cosine", warmup_ratio=0.03, logging_steps=1,
                      max_length=a.max_length, precision="bf16" if a.device == "cuda" else "fp32",
                      **({"lora": LORA} if method == "lora" else {}))
    trainer = build_trainer(str(model), rows, cfg, workdir / f"sftlab-{method}", callbacks=[],
                            progress=False)
    trainer.args.save_strategy = "no"
    return trainer


def run_trl(model: Path, rows, a, workdir: Path, packed: bool, method: str = "full"):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    micro, accum = a.micro_batch_size, a.batch_size // a.micro_batch_size
    extra = {}
    if packed:
        mean_len = a.mean_len
        micro = max(1, round(a.micro_batch_size * mean_len / a.max_length))
        extra = dict(packing=True, padding_free=True)
    args = SFTConfig(output_dir=str(workdir / f"{'packed' if packed else 'default'}-{method}"),
                     per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
                     max_length=a.max_length, **common_args(a), **extra)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    peft = None
    if method == "lora":
        from peft import LoraConfig

        peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=lm, args=args, train_dataset=data, processing_class=tok,
                         peft_config=peft)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no per-step log dicts between the results
    return trainer


def measure(name: str, trainer, eval_rows, a) -> dict:
    counter = CountingCollator(trainer.data_collator, trainer.processing_class.pad_token_id)
    trainer.data_collator = counter
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tail = losses[-max(1, len(losses) // 4):]
    return {
        "name": name,
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "tokens_per_second": round(counter.real / seconds, 1),
        "tokens_per_cpu_second": round(counter.real / cpu_seconds, 1),
        "padding_fraction": round(1 - counter.real / max(counter.processed, 1), 4),
        "train_loss_last_quarter": round(sum(tail) / len(tail), 4),
        "eval_loss": round(eval_loss(trainer.model, trainer.processing_class, eval_rows, a), 4),
    }


def eval_loss(model, tokenizer, rows, a) -> float:
    """Mean NLL per response token (EOS included) of ``rows``, one example at a time."""
    import torch

    from sftlab.train.data import tokenize_rows

    cols = tokenize_rows(rows, tokenizer)
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for ids, mask in zip(cols["input_ids"], cols["completion_mask"], strict=True):
            ids_t = torch.tensor([ids[: a.max_length]], device=device)
            labels = ids_t.clone()
            labels[0, : len(mask)][torch.tensor(mask[: a.max_length], device=device) == 0] = -100
            logits = model(input_ids=ids_t).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((labels[0, 1:] != -100).sum())
    model.train()
    return total / max(count, 1)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def parameter_count(model: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in lm.parameters())


def mfu(params: int, result: dict, a) -> float | None:
    """Model FLOPs utilisation: 6 x params x tokens/s over the GPU's bf16 peak."""
    import torch

    if a.device != "cuda":
        return None
    peak = a.peak_tflops * 1e12
    name = torch.cuda.get_device_name()
    flops = 6 * params * result["tokens_per_second"]
    print(f"MFU on {name}: {params / 1e6:.0f}M params, {flops / 1e12:.1f} TFLOP/s "
          f"of {a.peak_tflops} peak = {flops / peak:.1%} (6N per token, attention not counted)")
    return flops / peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--eval-rows", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--model", default=None,
                        help="model source (folder, hub id, tiny:<arch>, .gguf, pkg:, alias such "
                             "as smollm2-135m); default: a tiny llama of --hidden/--layers")
    parser.add_argument("--methods", default="full", help="comma-separated: full, lora")
    parser.add_argument("--skip-packed", action="store_true", help="leave out trl-packed")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM)")
    parser.add_argument("--mfu-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    rows, source = load_rows(a.rows + a.eval_rows, a.seed)
    train_rows, eval_rows = rows[: a.rows], rows[a.rows:]
    workdir = Path(tempfile.mkdtemp(prefix="sftlab-bench-"))
    try:
        if a.model:
            from sftlab.models.sources import resolve_model_source

            model = Path(resolve_model_source(a.model))
        else:
            model = build_model(workdir, a.hidden, a.layers)
        from transformers import AutoTokenizer

        from sftlab.train.data import tokenize_rows

        lengths = [len(x) for x in tokenize_rows(train_rows, AutoTokenizer.from_pretrained(model))["input_ids"]]
        a.mean_len = sum(lengths) / len(lengths)
        print(f"model: {a.model or 'tiny llama'} ({model}); data: {source}; {len(train_rows)} rows, "
              f"{sum(lengths)} tokens, length mean {a.mean_len:.0f} / max {max(lengths)}; "
              f"device {a.device}, torch threads {torch_threads()}")
        for method in a.methods.split(","):
            results = []
            sftlab_trainer = run_sftlab(model, train_rows, a, workdir, method)
            results.append(measure("sftlab", sftlab_trainer, eval_rows, a))
            del sftlab_trainer
            if a.mfu_only:
                mfu(parameter_count(model), results[0], a)
            else:
                results.append(measure("trl-default", run_trl(model, train_rows, a, workdir,
                                                              False, method), eval_rows, a))
                if not a.skip_packed:
                    results.append(measure("trl-packed", run_trl(model, train_rows, a, workdir,
                                                                 True, method), eval_rows, a))
            print(f"--- {method} ---")
            report(results, a)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: list[dict], a) -> None:
    if a.json:
        print(json.dumps(results, indent=1))
    base = next((r for r in results if r["name"] == "trl-default"), None)
    print(f"{'method':<12} {'steps':>5} {'wall s':>7} {'tok/s':>8} {'vs TRL':>7} {'cpu s':>7} "
          f"{'tok/cpu-s':>9} {'vs TRL':>7} {'padding':>8} {'loss(last 1/4)':>15} {'eval loss':>10}")
    for r in results:
        wall = f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}x" if base else "-"
        cpu = (f"{r['tokens_per_cpu_second'] / base['tokens_per_cpu_second']:.2f}x"
               if base else "-")
        print(f"{r['name']:<12} {r['steps']:>5} {r['seconds']:>7} {r['tokens_per_second']:>8} "
              f"{wall:>7} {r['cpu_seconds']:>7} {r['tokens_per_cpu_second']:>9} {cpu:>7} "
              f"{r['padding_fraction']:>8.1%} {r['train_loss_last_quarter']:>15} {r['eval_loss']:>10}")
    if not math.isfinite(results[0]["eval_loss"]):
        raise SystemExit("sftlab eval loss is not finite")


if __name__ == "__main__":
    main()
