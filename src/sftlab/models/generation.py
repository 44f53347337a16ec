"""The one generation path: the hf evaluation backend and ``sftlab serve`` call it.

Rows (one prompt, one sample each) are sorted by length and decoded in batches with
left padding by a loop of our own (:func:`_decode`) that drops each row from the batch,
its KV cache included, as soon as it ends, so long answers never keep short ones
computing. Every row keeps its own temperature, top-p, seed, stop strings and token
budget:

- each row's next token is drawn with the row's own ``torch.Generator``, so a sampled
  row gives the same text whatever it is batched with, in whatever order (up to float
  noise of padded batches);
- each row ends at EOS, at its budget or at its first stop string;
- the text is cut before the earliest stop string and the tokens after the first
  EOS (or trailing padding) are dropped;
- rows of a batch that share a long token prefix (a few-shot block, the n samples of
  one prompt) compute it once. With SDPA or eager attention its keys and values are kept
  once and every step reads them once for the whole batch
  (:mod:`sftlab.models.prefix_attention`); the cache holds only each row's own tokens.
  With other attention implementations the prefix's cache is expanded across the batch
  and each row continues as ``[prefix][padding][own suffix]``, the padding masked out.

:func:`sample_seed` derives a row's seed from (seed, item, sample index) alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from sftlab.models import prefix_attention

MIN_SHARED_PREFIX = 32  # tokens: shorter shared prefixes are not worth a separate pass


@dataclass
class GenRow:
    """One prompt to continue with one sample."""

    prompt_ids: list[int]
    max_new_tokens: int = 16
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None  # the row's own generator; None: fresh entropy


@dataclass
class Generated:
    ids: list[int]  # completion tokens, before EOS and the stop string
    text: str
    finish_reason: str  # "stop" | "length"
    step_logits: list[torch.Tensor] | None = None  # one [vocab] tensor per kept token


def sample_seed(seed: int, item: str, sample: int) -> int:
    """A 63-bit generator seed that depends on (seed, item, sample index) only."""
    digest = hashlib.sha256(f"{seed}\x00{item}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The generation config's EOS ids plus the tokenizer's."""
    ids = model.generation_config.eos_token_id if model.generation_config else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def context_length(model: Any, tokenizer: Any) -> int:
    limit = getattr(model.config, "max_position_embeddings", None)
    return int(limit) if limit else int(min(tokenizer.model_max_length, 1 << 20))


def generate_rows(model: Any, tokenizer: Any, rows: list[GenRow], *, batch_size: int = 8,
                  max_batch_tokens: int | None = None,
                  keep_logits: bool = False) -> list[Generated]:
    """Generate every row; the results come back in the rows' order.

    Rows are sorted by prompt length (longest first) and batched by ``batch_size``
    rows and, when given, ``max_batch_tokens`` (prompt plus budget, padded).
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos = eos_token_ids(model, tokenizer)
    results: list[Generated | None] = [None] * len(rows)
    for chunk in _batches(rows, batch_size, max_batch_tokens):
        outs = _generate_batch(model, tokenizer, [rows[i] for i in chunk], eos, keep_logits)
        for i, out in zip(chunk, outs, strict=True):
            results[i] = out
    return results  # type: ignore[return-value]


def _batches(rows: list[GenRow], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].prompt_ids))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = len(rows[current[0]].prompt_ids) if current else len(rows[i].prompt_ids)
        budget = max([rows[j].max_new_tokens for j in current] + [rows[i].max_new_tokens])
        too_many = max_tokens is not None and current and \
            (len(current) + 1) * (width + budget) > max_tokens
        if current and (len(current) >= batch_size or too_many):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def left_padded(id_lists: list[list[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of left-padded rows."""
    width = max(len(ids) for ids in id_lists)
    input_ids = torch.full((len(id_lists), width), pad, dtype=torch.long)
    mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for i, ids in enumerate(id_lists):
        if ids:
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
    return input_ids.to(device), mask.to(device)


@torch.inference_mode()
def _generate_batch(model: Any, tokenizer: Any, rows: list[GenRow], eos: list[int],
                    keep_logits: bool) -> list[Generated]:
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    shared = shared_prefix_length([r.prompt_ids for r in rows])
    if shared >= MIN_SHARED_PREFIX and len(rows) > 1 and prefix_attention.usable(model):
        prefix = prefix_kv(model, [rows[0].prompt_ids[:shared]], device)
        input_ids, mask = left_padded([r.prompt_ids[shared:] for r in rows], pad, device)
        with prefix_attention.shared_prefix_attention(model):
            new_ids, logits = _decode(model, tokenizer, rows, input_ids, mask, None, 0, eos,
                                      keep_logits, offset=shared,
                                      extra={"shared_prefix": prefix})
    elif shared >= MIN_SHARED_PREFIX and len(rows) > 1:
        input_ids, mask, cache = _with_shared_prefix(model, rows, shared, pad, device)
        new_ids, logits = _decode(model, tokenizer, rows, input_ids, mask, cache, shared, eos,
                                  keep_logits)
    else:
        input_ids, mask = left_padded([r.prompt_ids for r in rows], pad, device)
        new_ids, logits = _decode(model, tokenizer, rows, input_ids, mask, None, 0, eos,
                                  keep_logits)
    return [_finish(tokenizer, row, new_ids[b], eos, logits[b] if keep_logits else None)
            for b, row in enumerate(rows)]


def _decode(model: Any, tokenizer: Any, rows: list[GenRow], input_ids: torch.Tensor,
            mask: torch.Tensor, cache: Any, done: int, eos: list[int], keep_logits: bool,
            offset: int = 0, extra: dict[str, Any] | None = None,
            ) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
    """Each row's new tokens (and raw logits): a decoding loop that drops a row from the
    batch, KV cache included, as soon as it ends (EOS, its budget or a stop string), so
    the rows still running never wait on, or pay for, the finished ones.

    ``input_ids[:, :done]`` are already in ``cache`` (a shared prefix) or ``done`` is 0.
    ``offset``: positions before ``input_ids`` (a prefix given to every model call in
    ``extra``, not in the cache)."""
    from transformers import DynamicCache

    cache = cache if cache is not None else DynamicCache()
    pick = RowSampler(rows, input_ids.device)
    stops = RowStopper(rows, tokenizer)
    out_ids: list[list[int]] = [[] for _ in rows]
    out_logits: list[list[torch.Tensor]] = [[] for _ in rows]
    alive = list(range(len(rows)))  # rows still decoding, in batch order
    extra = extra or {}
    positions = offset + (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, step_pos = input_ids[:, done:], positions[:, done:]
    while alive:
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                       cache=cache, use_cache=True, logits_to_keep=1,
                       **extra).logits[:, -1, :]
        keep, tokens = [], []
        for j, (i, token) in enumerate(zip(alive, pick.choose(alive, logits), strict=True)):
            out_ids[i].append(token)
            if keep_logits:
                out_logits[i].append(logits[j])
            if not (token in eos or stops.ended(i, out_ids[i])):
                keep.append(j)
                tokens.append(token)
        last = step_pos[:, -1]
        if len(keep) < len(alive):
            if not keep:
                break
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            mask, last = mask[index], last[index]
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        step_ids = torch.tensor(tokens, device=mask.device)[:, None]
        step_pos = (last + 1)[:, None]
    return out_ids, out_logits


def shared_prefix_length(id_lists: list[list[int]]) -> int:
    """Tokens every list starts with, leaving each at least one token of its own."""
    first, shortest = id_lists[0], min(len(ids) for ids in id_lists)
    n = 0
    while n < shortest - 1 and all(ids[n] == first[n] for ids in id_lists):
        n += 1
    return n


def prefix_kv(model: Any, prefixes: list[list[int]], device: Any, *,
              last_hidden: bool = False):
    """Keys and values [len(prefixes), heads, longest, dim] of ``prefixes``, per layer: one
    forward pass, right-padded (causality keeps every real token from seeing a pad; a
    reader masks the pads out), the logits of the last position only.

    With ``last_hidden``: ``(keys and values, hidden)``, from the decoder alone,
    ``hidden[g]`` its last hidden state at prefix ``g``'s own last token (no head)."""
    width = max(len(p) for p in prefixes)
    ids = torch.zeros((len(prefixes), width), dtype=torch.long)
    for g, prefix in enumerate(prefixes):
        ids[g, :len(prefix)] = torch.tensor(prefix)
    with torch.inference_mode():
        if not last_hidden:
            out = model(input_ids=ids.to(device), use_cache=True, logits_to_keep=1)
            return [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        out = model.get_decoder()(input_ids=ids.to(device), use_cache=True)
        ends = torch.tensor([len(p) - 1 for p in prefixes], device=out.last_hidden_state.device)
        hidden = out.last_hidden_state[torch.arange(len(prefixes), device=ends.device), ends]
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers], hidden


def _with_shared_prefix(model: Any, rows: list[GenRow], shared: int, pad: int, device: Any):
    """Ids and mask laid out as ``[prefix][padding][suffix]`` plus the prefix's KV cache,
    computed once and expanded across the rows (``generate`` then runs the suffixes only)."""
    from transformers import DynamicCache

    prefix = torch.tensor([rows[0].prompt_ids[:shared]])
    layers = [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
              for k, v in prefix_kv(model, prefix.tolist(), device)]
    suffixes = [r.prompt_ids[shared:] for r in rows]
    width = max(len(s) for s in suffixes)
    input_ids = torch.full((len(rows), shared + width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    input_ids[:, :shared] = prefix
    mask[:, :shared] = 1
    for i, suffix in enumerate(suffixes):
        input_ids[i, shared + width - len(suffix):] = torch.tensor(suffix)
        mask[i, shared + width - len(suffix):] = 1
    return input_ids.to(device), mask.to(device), DynamicCache(ddp_cache_data=layers)


def _finish(tokenizer: Any, row: GenRow, ids: list[int], eos: list[int],
            logits: list[torch.Tensor] | None) -> Generated:
    ids = ids[:row.max_new_tokens]
    reason = "length"
    for k, tok in enumerate(ids):
        if tok in eos:
            ids, reason = ids[:k], "stop"
            break
    while ids and ids[-1] == tokenizer.pad_token_id:  # rows that stopped early
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = min((text.find(s) for s in row.stop if s and s in text), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop"
        ids = _ids_covering(tokenizer, ids, cut)
    steps = logits[:len(ids)] if logits is not None else None
    return Generated(ids, text, reason, steps)


def _ids_covering(tokenizer: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text reaches ``n_chars`` characters."""
    for k in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
            return ids[:k]
    return ids


def cut_at_stop(text: str, stops: list[str] | tuple[str, ...]) -> str:
    """``text`` before the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in stops:
        pos = text.find(s) if s else -1
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]


class RowSampler:
    """Draws each row's next token with its own temperature, top-p and generator
    (greedy rows, temperature 0, take the argmax).

    All rows of a step are handled in a few batched operations: softmax at each row's
    temperature, the nucleus found among the ``TOP_K`` most likely tokens when they hold
    at least ``top_p`` of the mass (it is then exactly the same set as a full sort gives;
    a row whose nucleus is wider is sorted in full; with top-p off nothing is sorted), and one uniform number per row from
    the row's own generator picks the token by inverse CDF. A row's token depends only on
    its logits and its generator, never on the other rows."""

    TOP_K = 256

    def __init__(self, rows: list[GenRow], device: torch.device):
        self.rows = rows
        self.device = device
        self.generators: list[torch.Generator | None] = []
        for row in rows:
            gen = None
            if row.temperature > 0:
                gen = torch.Generator(device=device)
                if row.seed is None:
                    gen.seed()
                else:
                    gen.manual_seed(row.seed)
            self.generators.append(gen)

    def choose(self, alive: list[int], logits: torch.Tensor) -> list[int]:
        """The next token of each row in ``alive``; ``logits[j]`` is row ``alive[j]``'s."""
        tokens = logits.argmax(-1).tolist()
        sampled = [j for j, i in enumerate(alive) if self.rows[i].temperature > 0]
        if not sampled:
            return tokens
        rows = [self.rows[alive[j]] for j in sampled]
        index = torch.tensor(sampled, device=logits.device)
        temps = torch.tensor([r.temperature for r in rows], device=logits.device)[:, None]
        probs = torch.softmax(logits.index_select(0, index).float() / temps, dim=-1)
        top_p = torch.tensor([r.top_p for r in rows], device=logits.device)[:, None]
        k = min(self.TOP_K, probs.shape[-1])
        values, order = probs.topk(k, dim=-1)
        # wide: the k most likely tokens hold less than top_p: sort all
        wide = (values.sum(-1, keepdim=True) < top_p).squeeze(-1).tolist()
        uniforms = [torch.rand((), generator=self.generators[alive[j]], device=self.device)
                    for j in sampled]
        for n, j in enumerate(sampled):
            if rows[n].top_p >= 1.0:  # no nucleus: the whole vocabulary, in its own order
                vals, ids = probs[n], None
            elif wide[n]:
                vals, ids = probs[n].sort(descending=True)
            else:
                vals, ids = values[n], order[n]
            if ids is not None:
                vals = vals[(vals.cumsum(-1) - vals) < rows[n].top_p]
            cdf = vals.cumsum(-1)
            pick = int(torch.searchsorted(cdf, uniforms[n] * cdf[-1], right=True))
            pick = min(pick, len(vals) - 1)
            tokens[j] = pick if ids is None else int(ids[pick])
        return tokens


class RowStopper:
    """Whether a row has ended: its token budget spent or a stop string in its new text."""

    def __init__(self, rows: list[GenRow], tokenizer: Any):
        self.rows = rows
        self.tokenizer = tokenizer
        self.windows = [max((len(s) for s in r.stop), default=0) + 8 for r in rows]

    def ended(self, i: int, ids: list[int]) -> bool:
        row = self.rows[i]
        if len(ids) >= row.max_new_tokens:
            return True
        if not row.stop:
            return False
        text = self.tokenizer.decode(ids[-self.windows[i]:], skip_special_tokens=True)
        return any(s and s in text for s in row.stop)
