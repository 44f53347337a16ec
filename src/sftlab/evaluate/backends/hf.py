"""The ``hf`` backend: a transformers causal LM (optionally with a PEFT adapter), CPU or GPU.

Log-likelihood requests are tokenised as lm-evaluation-harness does (trailing
whitespace of the context moves to the continuation; the continuation's tokens
are those of ``context + continuation`` after the context's tokens). Then:

1. requests with the same context are grouped; a group's single-token
   continuations share one row (the context once, the logits of each choice
   token read at its last position);
2. contexts that share a long token prefix (a few-shot prefix) form a cluster:
   the prefix is run once, and its KV cache (transformers ``DynamicCache``) is
   expanded across every batch of the cluster's rows; a lone long context with
   several multi-token continuations (HellaSwag's four endings) is its own prefix,
   and such contexts run many at a time: one forward pass for a chunk's contexts
   (right-padded), then their endings in batches, each reading its own context's keys;
3. rows are sorted by length and cut into batches by :func:`least_padding`
   (right padding, never to the whole set's maximum); only the logits of scored
   positions are computed.

Generation is batched the same way (left padding), greedy or ``n`` seeded
samples, stopping at stop strings (``stop_strings``) or EOS; texts are cut before
the first stop sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)

log = logging.getLogger(__name__)

MIN_SHARED_PREFIX = 16  # tokens: shorter shared prefixes are not worth a separate pass


@dataclass
class _Target:
    request: int  # index of the request
    tokens: list[int]  # continuation tokens scored at the row's end


@dataclass
class _Row:
    tokens: list[int]  # tokens after the cluster prefix
    targets: list[_Target] = field(default_factory=list)


class HFBackend:
    """A transformers model answering loglikelihood and generate requests."""

    name = "hf"

    def __init__(self, model: str, *, adapter: str | None = None, device: str | None = None,
                 dtype: str | None = None, batch_size: int | None = None,
                 max_batch_tokens: int | None = None, trust_remote_code: bool = False,
                 add_special_tokens: bool = True, pair_split: str = "lm-eval") -> None:
        from sftlab.models.runtime import load_for_inference

        if pair_split not in ("lm-eval", "separate"):
            raise UserError(f"pair_split must be 'lm-eval' or 'separate', got {pair_split!r}")
        self.pair_split = pair_split
        self.add_special_tokens = add_special_tokens
        loaded = load_for_inference(model, adapter=adapter, device=device, dtype=dtype,
                                    trust_remote_code=trust_remote_code)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.device, self.dtype_name = loaded.device, loaded.dtype
        self.model_path, self.adapter = loaded.path, loaded.adapter
        on_gpu = self.device.type == "cuda"
        self.batch_size = batch_size or (64 if on_gpu else 32)
        self.max_batch_tokens = max_batch_tokens or (32768 if on_gpu else 8192)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 4096) or 4096)
        self._head_at_positions: bool | None = None  # see _scored_logits
        # what one more model call costs, in tokens of work (batches trade padding for
        # calls). CPU: measured on SmolLM2-135M, 2 cores (HellaSwag 0-shot, 150 items: 34-37 s
        # at 256, 41 s at 32, 128 or 1024). GPU: a guess (kernel launches dwarf a token).
        self.call_cost_tokens = 4096 if on_gpu else 256
        self.prefix_token = (self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None
                             else self.tokenizer.eos_token_id)

    # ------------------------------------------------------------------ tokenising

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens, continuation tokens).

        ``lm-eval`` (the default, for parity with lm-evaluation-harness): trailing spaces of
        the context move into the continuation and the continuation is what the joint
        tokenisation adds. ``separate``: each part tokenised on its own, exactly as sftlab
        trains on a prompt and its completion (used with a study template, whose prompt
        ends in ``"###Answer: "``).
        """
        if self.pair_split == "separate" and context:
            ctx = self.encode(context)
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            room = self.max_length - len(cont)
            return (ctx[-room:] if len(ctx) > room else ctx), cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        ctx = self.encode(context) if context else []
        if not ctx:
            ctx = [self.prefix_token]
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            return ctx, cont
        cont = self.encode(context + continuation)[len(ctx):]
        room = self.max_length - len(cont)
        return (ctx[-room:] if len(ctx) > room else ctx), cont

    # ------------------------------------------------------------------ loglikelihood

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """Summed log-probability of each continuation given its context."""
        pairs = [self.encode_pair(r.context, r.continuation) for r in requests]
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                raise ValueError(f"empty continuation in request {i}: {requests[i]!r}")
            by_context.setdefault(tuple(ctx), []).append(i)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        loose: list[_Row] = []
        lone: list[tuple[list[int], list[_Row]]] = []
        for prefix_len, contexts in self._clusters(sorted(by_context)):
            alone = prefix_len == 0 and self._shares_within(contexts[0], by_context, pairs)
            if alone:  # e.g. HellaSwag 0-shot: 4 endings, 1 context
                # the whole context is the prefix when the head can be applied to its last
                # hidden state (which then predicts every ending's first token), else all
                # but its last token, which each ending's row repeats
                whole = self._head_applies(contexts[0])
                prefix_len = len(contexts[0]) - (0 if whole else 1)
            rows = [row for c in contexts for row in self._rows(c, prefix_len, by_context[c], pairs)]
            if prefix_len == 0:
                loose += rows
            elif alone:
                lone.append((list(contexts[0][:prefix_len]), rows))
            else:
                self._score_rows(list(contexts[0][:prefix_len]), rows, results)
        self._score_lone_prefixes(lone, results)
        self._score_rows([], loose, results)
        return [r for r in results if r is not None]

    @staticmethod
    def _clusters(contexts: list[tuple[int, ...]]) -> list[tuple[int, list[tuple[int, ...]]]]:
        """Group sorted contexts sharing >= MIN_SHARED_PREFIX tokens; prefix 0 = no sharing.

        Contexts are sorted, so a cluster is a run of neighbours; a run ends when the next
        context shares too little with it (or would halve the prefix the run already shares).

        A shared prefix always leaves at least one token of every member's context, whose
        last position predicts the first continuation token.
        """
        clusters: list[list[Any]] = []  # [shared length, members]
        for ctx in contexts:
            if clusters:
                shared_len, members = clusters[-1]
                head = members[0]
                limit = min(len(ctx) - 1, len(head) - 1 if len(members) == 1 else shared_len)
                shared = 0
                while shared < limit and head[shared] == ctx[shared]:
                    shared += 1
                # join unless that would cut an established shared prefix by more than half
                # (e.g. MMLU: subjects share a header, each subject its own few-shot prefix)
                established = len(members) > 1 and shared < shared_len // 2
                if shared >= MIN_SHARED_PREFIX and not established:
                    clusters[-1][0] = shared
                    members.append(ctx)
                    continue
            clusters.append([0, [ctx]])
        return [(plen, members) for plen, members in clusters]

    @staticmethod
    def _shares_within(ctx: tuple[int, ...], by_context: dict, pairs: list) -> bool:
        """A lone context worth computing once for its own continuations: long enough, and
        with two or more multi-token continuations (each would otherwise repeat it)."""
        multi = sum(1 for i in by_context[ctx] if len(pairs[i][1]) > 1)
        return multi >= 2 and len(ctx) > MIN_SHARED_PREFIX

    def _rows(self, ctx: tuple[int, ...], prefix_len: int, requests: list[int],
              pairs: list[tuple[list[int], list[int]]]) -> list[_Row]:
        """One row for the single-token continuations of a context, one per longer one."""
        suffix = list(ctx[prefix_len:])
        rows: list[_Row] = []
        single = [_Target(i, pairs[i][1]) for i in requests if len(pairs[i][1]) == 1]
        if single:
            rows.append(_Row(suffix, single))
        for i in requests:
            cont = pairs[i][1]
            if len(cont) > 1:
                rows.append(_Row(suffix + cont[:-1], [_Target(i, cont)]))
        return rows

    def _head_applies(self, ids: Any) -> bool:
        """Whether the output head may run on chosen hidden states (checked once, on the
        token row ``ids``, a sequence or 1-D tensor): see
        :func:`sftlab.models.runtime.plain_head`."""
        if self._head_at_positions is None:
            import torch

            from sftlab.models.runtime import plain_head

            row = torch.as_tensor(ids[:16]).reshape(1, -1).to(self.device)
            self._head_at_positions = plain_head(self.model, row)
        return self._head_at_positions

    def _prefix_cache(self, prefixes: list[list[int]], last_hidden: bool = False) -> Any:
        """Key/value tensors of every layer for ``prefixes`` (one batch, right-padded to
        the longest; a row's padding is masked out wherever its keys are read); with
        ``last_hidden``, also each prefix's last hidden state (``prefix_kv``)."""
        from sftlab.models.generation import prefix_kv

        return prefix_kv(self.model, prefixes, self.device, last_hidden=last_hidden)

    def _score_lone_prefixes(self, groups: list[tuple[list[int], list[_Row]]],
                             results: list[LoglikelihoodResult | None]) -> None:
        """Contexts that are each their own prefix (a zero-shot context and its several
        endings), many at a time: one forward pass for up to ``batch_size`` contexts of
        similar length (right-padded), then their endings sorted by length and batched as
        any rows are, each ending reading its own context's keys."""
        import torch

        groups = sorted(groups, key=lambda g: -len(g[0]))
        cuts = least_padding([len(p) for p, _ in groups], self.batch_size, self.max_batch_tokens,
                             0, self.call_cost_tokens)
        for i, j in cuts:
            chunk = groups[i:j]
            prefixes = [prefix for prefix, _ in chunk]
            # a lone prefix is a whole context only where the head applies (loglikelihood)
            kv, last = (self._prefix_cache(prefixes, last_hidden=True)
                        if self._head_applies(prefixes[0]) else (self._prefix_cache(prefixes), None))
            width = len(chunk[0][0])
            owner = {id(row): g for g, (_, rows) in enumerate(chunk) for row in rows}
            rows = [row for _, rows in chunk for row in rows]
            if last is not None:  # the whole context is cached: its last state leads each row
                self._score_at_lead([r for r in rows if not r.tokens],
                                    last[[owner[id(r)] for r in rows if not r.tokens]], results)
                rows = [r for r in rows if r.tokens]
            for batch in self._batches(rows, width):
                index = torch.tensor([owner[id(row)] for row in batch], device=self.device)
                self._score_batch(batch, width,
                                  [(k.index_select(0, index), v.index_select(0, index))
                                   for k, v in kv], results,
                                  prefix_lens=[len(chunk[owner[id(row)]][0]) for row in batch],
                                  leads=None if last is None else last[index])

    def _score_at_lead(self, rows: list[_Row], lead: Any,
                       results: list[LoglikelihoodResult | None]) -> None:
        """Rows with no tokens of their own (single-token continuations of a cached
        context): scored from their context's last hidden state alone."""
        import torch

        if rows:
            with torch.inference_mode():
                self._score_logits(rows, self.model.get_output_embeddings()(lead).float(),
                                   [(-1, 0)] * len(rows), results)

    def _batches(self, rows: list[_Row], prefix_len: int) -> list[list[_Row]]:
        """Rows sorted by length (longest first) cut into row- and token-budget batches
        with the least padding (:func:`least_padding`)."""
        rows = sorted(rows, key=lambda r: -len(r.tokens))
        cuts = least_padding([len(r.tokens) for r in rows], self.batch_size,
                             self.max_batch_tokens, prefix_len, self.call_cost_tokens)
        return [rows[i:j] for i, j in cuts]

    def _score_rows(self, prefix: list[int], rows: list[_Row],
                    results: list[LoglikelihoodResult | None]) -> None:
        if not rows:
            return
        kv = self._prefix_cache([prefix]) if prefix else None
        for batch in self._batches(rows, len(prefix)):
            self._score_batch(batch, len(prefix), kv, results)

    def _score_batch(self, batch: list[_Row], prefix_len: int, kv: list[tuple[Any, Any]] | None,
                     results: list[LoglikelihoodResult | None],
                     prefix_lens: list[int] | None = None, leads: Any = None) -> None:
        """Score a batch of rows after a prefix of ``prefix_len`` cached positions: one
        prefix for all (``kv`` of batch 1), or each row its own (``kv`` of the batch's size,
        row ``b``'s prefix ``prefix_lens[b]`` tokens long, the rest padding). With
        ``leads`` (``[batch, hidden]``: the last hidden state of each row's prefix), the
        prefix's last position is each row's first scored one."""
        import torch
        from transformers import DynamicCache

        width = max(len(r.tokens) for r in batch)
        own = prefix_lens or [prefix_len] * len(batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), prefix_len + width), dtype=torch.long)
        for b, row in enumerate(batch):
            ids[b, : len(row.tokens)] = torch.tensor(row.tokens)
            mask[b, :own[b]] = 1
            mask[b, prefix_len : prefix_len + len(row.tokens)] = 1
        # scored positions: the last len(target) positions of each row (-1: the lead)
        spans = [(len(r.tokens) - max(len(t.tokens) for t in r.targets), len(r.tokens))
                 for r in batch]
        kwargs: dict[str, Any] = {}
        if kv is not None:
            kwargs["cache"] = DynamicCache(
                ddp_cache_data=[(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1))
                                for k, v in kv])
        positions = torch.arange(width).unsqueeze(0) + torch.tensor(own).unsqueeze(1)
        inputs = {"input_ids": ids.to(self.device), "position_ids": positions.to(self.device),
                  "use_cache": kv is not None, **kwargs}
        if kv is not None:  # without a prefix, rows are right-padded: causality hides the pads
            inputs["attention_mask"] = mask.to(self.device)
        with torch.inference_mode():
            self._score_logits(batch, self._scored_logits(inputs, spans, leads), spans, results)

    @staticmethod
    def _score_logits(batch: list[_Row], logits: Any, spans: list[tuple[int, int]],
                      results: list[LoglikelihoodResult | None]) -> None:
        """Each target's summed log-probability and greedy flag from ``logits`` at the
        rows' scored positions (``spans``, one after another). ``logits`` is consumed:
        overwritten in place, so callers pass a tensor of their own, never a view of one
        they read again."""
        import torch

        positions, tokens, offset = [], [], 0
        for (start, end), row in zip(spans, batch, strict=True):
            offset += end - start
            for t in row.targets:
                positions.extend(range(offset - len(t.tokens), offset))
                tokens.extend(t.tokens)
        at = torch.tensor(positions, device=logits.device)
        want = torch.tensor(tokens, device=logits.device)
        # log p = logit - logsumexp, no log-softmax over the vocabulary written: one max pass
        # gives the greedy token and logsumexp's shift, then exp and sum in place: 27% less
        # time than logsumexp plus argmax on SmolLM2's 49k vocabulary, bit-identical
        chosen = logits[at, want]
        top, greedy = logits.max(-1)
        lse = top + logits.sub_(top[:, None]).exp_().sum(-1).log()
        logprobs = (chosen - lse[at]).cpu()
        hits = (greedy[at] == want).cpu()
        k = 0
        for row in batch:
            for t in row.targets:
                n = len(t.tokens)
                results[t.request] = LoglikelihoodResult(logprobs[k:k + n].sum().item(),
                                                         bool(hits[k:k + n].all()), n)
                k += n

    def _scored_logits(self, inputs: dict[str, Any], spans: list[tuple[int, int]],
                       leads: Any = None) -> Any:
        """Float logits [sum of span lengths, vocab] at each row's scored positions, the
        rows' spans one after another (a span starting at -1 starts with the row's lead,
        the hidden state ``leads[b]``).

        Where the model's logits are its output embedding applied to its decoder's last
        hidden state (checked once per backend, on the first row scored, against the
        model's own forward pass), the head runs at the scored positions only, not at the
        padding between them; otherwise the model computes logits from the first scored
        position on."""
        import torch

        if self._head_applies(inputs["input_ids"][0]):
            hidden = self.model.get_decoder()(**inputs).last_hidden_state
            if leads is not None:  # position -1 of each row: its lead
                hidden = torch.cat([leads[:, None].to(hidden.dtype), hidden], dim=1)
                spans = [(s + 1, e + 1) for s, e in spans]
            rows = torch.cat([torch.full((e - s,), b) for b, (s, e) in enumerate(spans)])
            cols = torch.cat([torch.arange(s, e) for s, e in spans])
            return self.model.get_output_embeddings()(
                hidden[rows.to(hidden.device), cols.to(hidden.device)]).float()
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        keep = torch.arange(lo, hi, device=self.device)
        logits = self.model(**inputs, logits_to_keep=keep).logits
        return torch.cat([logits[b, s - lo:e - lo] for b, (s, e) in enumerate(spans)]).float()

    # ------------------------------------------------------------------ generation

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """``n`` texts per request, cut before the first stop sequence.

        Each sample is one row of the shared generation path; a sampled row's
        generator is seeded from (request seed, item, sample index) only, so outputs
        do not depend on the batch size, the order or the other requests.
        """
        from sftlab.models.generation import GenRow, generate_rows, sample_seed

        rows: list[GenRow] = []
        for r in requests:
            prompt = self._truncate(self.encode(r.prompt), r.max_new_tokens)
            sampled = r.n > 1 or r.temperature > 0
            temperature = (r.temperature or 1.0) if sampled else 0.0
            for s in range(r.n):
                seed = sample_seed(r.seed, r.key or r.prompt, s) if sampled else None
                rows.append(GenRow(prompt, r.max_new_tokens, temperature, r.top_p,
                                   tuple(x for x in r.stop if x), seed))
        outs = generate_rows(self.model, self.tokenizer, rows, batch_size=self.batch_size)
        results, k = [], 0
        for r in requests:
            group = outs[k : k + r.n]
            k += r.n
            results.append(GenerateResult([g.text for g in group], len(rows[k - 1].prompt_ids),
                                          [len(g.ids) for g in group]))
        return results

    def _truncate(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Keep the end of a prompt that would not leave room for the new tokens."""
        room = max(1, self.max_length - max_new_tokens)
        return prompt[-room:] if len(prompt) > room else prompt

    # ------------------------------------------------------------------ provenance

    def provenance(self) -> dict[str, Any]:
        import peft
        import torch
        import transformers

        return {"backend": self.name, "model": self.model_path, "adapter": self.adapter,
                "dtype": self.dtype_name, "device": str(self.device),
                "batch_size": self.batch_size, "max_batch_tokens": self.max_batch_tokens,
                "add_special_tokens": self.add_special_tokens, "pair_split": self.pair_split,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "peft": peft.__version__}}


def least_padding(lengths: list[int], max_rows: int, max_tokens: int, prefix_len: int = 0,
                  call_cost: int = 0) -> list[tuple[int, int]]:
    """Cut rows sorted by length (longest first) into batches ``[i, j)`` of at most
    ``max_rows`` rows and ``max_tokens`` padded tokens (``prefix_len`` cached positions
    each), minimising the padded tokens computed plus ``call_cost`` per batch: an exact
    dynamic programme over the sorted order. A row alone may exceed ``max_tokens``."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, max(0, j - max_rows) - 1, -1):
            rows = j - i
            if rows > 1 and rows * (prefix_len + lengths[i]) > max_tokens:
                break  # longer batches only add rows at this width or wider
            cost = best[i] + rows * lengths[i] + call_cost
            if cost < best[j]:
                best[j], start[j] = cost, i
    cuts, j = [], n
    while j > 0:
        cuts.append((start[j], j))
        j = start[j]
    return cuts[::-1]
