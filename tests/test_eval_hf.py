"""The hf backend: batched + prefix-shared log-likelihoods equal a naive computation;
greedy generation equals ``model.generate``; stop sequences; seeded samples."""

from __future__ import annotations

import pytest
import torch

from sftlab.evaluate.backends.base import GenerateRequest, LoglikelihoodRequest
from sftlab.evaluate.backends.hf import HFBackend
from sftlab.models.generation import cut_at_stop

SHOTS = "".join(f"Question: what is {i} plus {i}?\nAnswer: {2 * i}\n\n" for i in range(6))


def requests() -> list[LoglikelihoodRequest]:
    reqs = []
    for q in ["what is 7 plus 7?", "name a color", "is ice cold?"]:
        ctx = SHOTS + f"Question: {q}\nAnswer:"
        reqs += [LoglikelihoodRequest(ctx, c) for c in (" A", " B", " 14", " blue sky today")]
    reqs += [LoglikelihoodRequest("", "hello world"), LoglikelihoodRequest("Short", " one"),
             LoglikelihoodRequest("Short ", "two words"), LoglikelihoodRequest("x", " y z")]
    return reqs


def naive(be: HFBackend, req: LoglikelihoodRequest) -> tuple[float, bool]:
    ctx, cont = be.encode_pair(req.context, req.continuation)
    with torch.no_grad():
        logits = be.model(torch.tensor([ctx + cont])).logits[0].float()
    lp = torch.log_softmax(logits, -1)[len(ctx) - 1 : len(ctx) + len(cont) - 1]
    want = torch.tensor(cont)
    return lp.gather(1, want[:, None]).sum().item(), bool((lp.argmax(-1) == want).all())


def assert_naive(be: HFBackend, reqs: list, results: list) -> None:
    """Every result equals the naive unbatched forward pass (log-prob and greediness)."""
    assert len(results) == len(reqs)
    for req, res in zip(reqs, results, strict=True):
        ref, greedy = naive(be, req)
        assert res.logprob == pytest.approx(ref, abs=1e-4), req
        assert res.is_greedy == greedy


ENDINGS = [" picks one up slowly", " sits down on the bench", " waters them all", " leaves"]


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_qwen2"])
def backend(request):
    return HFBackend(str(request.getfixturevalue(request.param)), batch_size=3)


def test_loglikelihood_equals_naive(backend, monkeypatch):
    calls = []
    original = backend._prefix_cache
    monkeypatch.setattr(backend, "_prefix_cache",
                        lambda ps: calls.extend(len(p) for p in ps) or original(ps))
    reqs = requests()
    results = backend.loglikelihood(reqs)
    assert len(results) == len(reqs)
    assert_naive(backend, reqs, results)
    # the few-shot prefix was computed once for the three questions
    assert len(calls) == 1 and calls[0] >= len(backend.encode(SHOTS)) - 2


@pytest.mark.parametrize("plain", [True, False])
def test_a_lone_context_with_several_endings_is_computed_once(backend, monkeypatch, plain):
    """HellaSwag 0-shot: four multi-token endings of one long context share its KV. Where
    the head applies apart (``plain``), the whole context is cached and its last hidden
    state scores each ending's first token; else each ending's row repeats its last token."""
    calls = []
    original = backend._prefix_cache
    monkeypatch.setattr(backend, "_head_at_positions", plain)
    monkeypatch.setattr(backend, "_prefix_cache",
                        lambda ps, **k: calls.extend(len(p) for p in ps) or original(ps, **k))
    contexts = [f"Scene {i}: a person walks into the garden and looks at the {i} flowers, then"
                for i in range(3)]
    endings = ENDINGS
    reqs = [LoglikelihoodRequest(c, e) for c in contexts for e in endings]
    results = backend.loglikelihood(reqs)
    assert_naive(backend, reqs, results)
    lengths = [len(backend.encode_pair(c, endings[0])[0]) for c in contexts]
    # each context once, as a prefix
    assert sorted(calls) == sorted(n - (0 if plain else 1) for n in lengths)


def test_single_token_endings_of_a_cached_context_need_no_row(backend, monkeypatch):
    """A lone context with multi-token and single-token continuations: the single-token
    ones are scored from the context's last hidden state alone, without a row of their own."""
    contexts = [f"Scene {i}: a person walks into the garden and looks at the {i} flowers, then"
                for i in range(2)]
    endings = [*ENDINGS, " a", " the"]
    reqs = [LoglikelihoodRequest(c, e) for c in contexts for e in endings]
    assert sum(len(backend.encode_pair(r.context, r.continuation)[1]) == 1 for r in reqs) >= 2
    rows = []
    score = backend._score_batch
    monkeypatch.setattr(backend, "_score_batch", lambda batch, *a, **k: rows.extend(
        batch) or score(batch, *a, **k))
    results = backend.loglikelihood(reqs)
    assert_naive(backend, reqs, results)
    assert backend._head_at_positions and all(r.tokens for r in rows)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
def test_lone_contexts_are_computed_several_at_a_time(arch, request, monkeypatch):
    """HellaSwag 0-shot with room in the batch: the contexts of several items run in one
    forward pass (right-padded), then all their endings in one more, each reading only its
    own context; the scores equal a naive forward pass over each context and ending."""
    backend = HFBackend(str(request.getfixturevalue(arch)), batch_size=8)
    calls, batches = [], []
    original, score = backend._prefix_cache, backend._score_batch
    monkeypatch.setattr(backend, "_prefix_cache", lambda ps, **k: calls.append(
        [len(p) for p in ps]) or original(ps, **k))
    monkeypatch.setattr(backend, "_score_batch", lambda batch, *a, **k: batches.append(
        len(batch)) or score(batch, *a, **k))
    contexts = [f"Scene {i}: a person walks into the{' big' * i} garden and looks at the {i} "
                "flowers, then" for i in range(5)]
    endings = ENDINGS
    reqs = [LoglikelihoodRequest(c, e) for c in contexts for e in endings]
    results = backend.loglikelihood(reqs)
    assert_naive(backend, reqs, results)
    lengths = sorted(len(backend.encode_pair(c, endings[0])[0]) for c in contexts)
    assert sorted(n for call in calls for n in call) == lengths  # each whole context once
    assert len(calls) < len(contexts)  # several items' contexts per forward pass
    assert len(batches) < len(contexts) and max(batches) > len(endings)  # endings batched too


def test_logits_at_scored_positions_only_where_the_head_is_checked(backend, monkeypatch):
    """The head runs at the scored positions only when head(decoder(x)) is the model's
    logits; a model with a step after its head (here: logits scaled) is detected and
    scored by its own forward pass, and both ways equal the naive pass."""
    import torch

    from sftlab.models.runtime import plain_head

    row = torch.tensor([backend.encode("A short check row")])
    reqs = requests()
    assert plain_head(backend.model, row)
    monkeypatch.setattr(backend, "_head_at_positions", False)
    assert_naive(backend, reqs, backend.loglikelihood(reqs))
    head = backend.model.get_output_embeddings()
    monkeypatch.setattr(backend.model, "get_output_embeddings",
                        lambda: lambda h: 2.0 * head(h))
    assert not plain_head(backend.model, row)


def test_single_token_choices_share_a_row(backend):
    ctx = SHOTS + "Question: pick one\nAnswer:"
    pairs = [backend.encode_pair(ctx, c) for c in (" A", " B")]
    assert all(len(cont) == 1 for _, cont in pairs)
    rows = backend._rows(tuple(pairs[0][0]), 5, [0, 1], pairs)
    assert len(rows) == 1 and len(rows[0].targets) == 2


def test_batches_sorted_and_never_padded_to_the_set_maximum(backend):
    from sftlab.evaluate.backends.hf import _Row

    rows = [_Row(list(range(n))) for n in (3, 50, 4, 49, 5, 48)]
    batches = backend._batches(rows, prefix_len=0)
    assert [[len(r.tokens) for r in b] for b in batches] == [[50, 49, 48], [5, 4, 3]]


def test_batches_are_cut_where_padding_costs_more_than_a_call():
    """The cut of sorted rows into batches is the cheapest one: padded tokens plus a fixed
    cost per call, within the row and token budgets (checked against every cut)."""
    import itertools

    from sftlab.evaluate.backends.hf import least_padding

    def cost(cuts, lengths, call):
        return sum((j - i) * lengths[i] + call for i, j in cuts)

    lengths = [778, 404, 365, 328, 300, 282, 120, 118, 110, 40, 39, 12]
    for call, max_rows, max_tokens in [(32, 4, 8192), (0, 12, 1000), (500, 12, 8192)]:
        got = least_padding(lengths, max_rows, max_tokens, call_cost=call)
        assert [i for i, _ in got][1:] == [j for _, j in got][:-1] and got[-1][1] == len(lengths)
        best = None
        for mask in itertools.product([0, 1], repeat=len(lengths) - 1):
            edges = [0] + [k + 1 for k, m in enumerate(mask) if m] + [len(lengths)]
            cuts = list(itertools.pairwise(edges))
            if all(j - i <= max_rows and ((j - i) * lengths[i] <= max_tokens or j - i == 1)
                   for i, j in cuts):
                c = cost(cuts, lengths, call)
                best = c if best is None else min(best, c)
        assert cost(got, lengths, call) == best
    assert least_padding([50, 49, 48, 5, 4, 3], 32, 8192, call_cost=32) == [(0, 3), (3, 6)]


def test_greedy_generation_equals_model_generate(backend):
    prompts = ["Question: what is 2 plus 2?\nAnswer:", "def add(a, b):", "The sky"]
    got = backend.generate([GenerateRequest(p, (), 12) for p in prompts])
    for p, res in zip(prompts, got, strict=True):
        ids = torch.tensor([backend.encode(p)])
        out = backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                     do_sample=False, pad_token_id=backend.tokenizer.pad_token_id)
        toks = out[0, ids.shape[1]:].tolist()
        eos = backend.tokenizer.eos_token_id
        toks = toks[: toks.index(eos)] if eos in toks else toks
        assert res.texts == [backend.tokenizer.decode(toks, skip_special_tokens=True)]


def test_stop_sequences_cut_the_text(backend):
    full = backend.generate([GenerateRequest("The sky", (), 16)])[0].texts[0]
    stop = next((full[i:i + 2] for i in range(1, len(full) - 1) if full[i:i + 2].strip()), None)
    if stop is None:
        pytest.skip("generated text too short to pick a stop sequence")
    cut = backend.generate([GenerateRequest("The sky", (stop,), 16)])[0].texts[0]
    assert cut == full[: full.index(stop)]
    assert cut_at_stop("abc\nQ: x", ["Q:", "\n"]) == "abc"


def test_seeded_samples_are_reproducible(backend):
    req = GenerateRequest("Once upon", (), 8, temperature=1.0, n=3, seed=7)
    a = backend.generate([req])[0].texts
    b = backend.generate([req])[0].texts
    assert a == b and len(a) == 3
    assert len(set(backend.generate([GenerateRequest("Once upon", (), 8, 1.0, 1.0, 3, 8)])[0].texts
                   + a)) > 1


def test_each_fewshot_prefix_is_its_own_cluster(backend, monkeypatch):
    """Subjects share a header, and each subject its own longer few-shot prefix (MMLU)."""
    calls = []
    original = backend._prefix_cache
    monkeypatch.setattr(backend, "_prefix_cache",
                        lambda ps: calls.extend(len(p) for p in ps) or original(ps))
    header = "The following are multiple choice questions about things.\n\n"
    reqs = []
    for subject in ("alpha", "omega"):
        shots = "".join(f"Q{i} about {subject} {subject} {subject}?\nAnswer: A\n\n" for i in range(8))
        for q in ("first?", "second one?"):
            reqs += [LoglikelihoodRequest(header + shots + q + "\nAnswer:", c) for c in (" A", " B")]
    results = backend.loglikelihood(reqs)
    assert len(calls) == 2 and min(calls) > len(backend.encode(header)) + 20
    for req, res in zip(reqs, results, strict=True):
        assert res.logprob == pytest.approx(naive(backend, req)[0], abs=1e-4)


def test_separate_pair_split_scores_tokens_as_training_saw_them(tiny_llama):
    """With a study template, the answer is tokenised on its own after the prompt's tokens
    (as training does), and the scores equal a naive forward pass over exactly those."""
    be = HFBackend(str(tiny_llama), batch_size=2, pair_split="separate")
    prompt = "###Question: What does a cow say?\n\n###Answer: "
    reqs = [LoglikelihoodRequest(prompt, a) for a in ("Moo.", "Woof.", "Paris is big.")]
    for req, res in zip(reqs, be.loglikelihood(reqs), strict=True):
        ctx, cont = be.encode_pair(req.context, req.continuation)
        assert ctx == be.encode(prompt)
        assert cont == be.tokenizer(req.continuation, add_special_tokens=False)["input_ids"]
        assert res.logprob == pytest.approx(naive(be, req)[0], abs=1e-4)
    joint = HFBackend(str(tiny_llama), batch_size=2)  # lm-eval: the space joins the answer
    assert joint.encode_pair(prompt, "Moo.")[0] != be.encode(prompt)
    assert be.provenance()["pair_split"] == "separate"
