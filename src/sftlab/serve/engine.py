"""The model side of ``sftlab serve``: batched generation and prompt log-probabilities.

One :class:`Engine` owns a transformers causal LM and its tokenizer (loaded by the one
runtime, :func:`sftlab.models.runtime.load_for_inference`). Requests arrive as
:class:`Row` records (one prompt, one sample); generation goes through the project's
one generation path (:mod:`sftlab.models.generation`: length-sorted, left-padded
batches, every row with its own temperature, top-p, seeded generator, stop strings and
token budget), and the engine adds what the OpenAI API asks for: finish reasons,
per-token log-probabilities and prompt echo scoring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from sftlab.models.generation import (
    GenRow,
    context_length,
    eos_token_ids,
    generate_rows,
    left_padded,
)

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One prompt to continue (``max_tokens`` may be 0 for pure scoring)."""

    prompt_ids: list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # top-k log-probs per token; None = none wanted
    echo: bool = False  # also score the prompt tokens


@dataclass
class TokenScores:
    """Per-token log-probabilities in the shape of OpenAI's legacy ``logprobs``."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    top: list[dict[int, float] | None] = field(default_factory=list)


@dataclass
class RowOutput:
    text: str
    completion_ids: list[int]
    finish_reason: str  # "stop" | "length"
    prompt_scores: TokenScores | None = None
    completion_scores: TokenScores | None = None


class Engine:
    """Runs rows through one model; not thread-safe (the batcher calls it from one thread)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.max_length = context_length(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def run(self, rows: list[Row]) -> list[RowOutput]:
        """Answer every row: prompt scores where asked, then generation in batches."""
        outs = [RowOutput("", [], "length") for _ in rows]
        echo = [i for i, r in enumerate(rows) if r.echo and r.logprobs is not None]
        for start in range(0, len(echo), self.max_batch):
            chunk = echo[start:start + self.max_batch]
            for i, scores in zip(chunk, self._score_prompts([rows[i] for i in chunk]), strict=True):
                outs[i].prompt_scores = scores
        gen = [i for i, r in enumerate(rows) if r.max_tokens > 0]
        keep_logits = any(rows[i].logprobs is not None for i in gen)
        generated = generate_rows(self.model, self.tokenizer, [
            GenRow(rows[i].prompt_ids, rows[i].max_tokens, rows[i].temperature, rows[i].top_p,
                   rows[i].stop, rows[i].seed) for i in gen],
            batch_size=self.max_batch, keep_logits=keep_logits)
        for i, g in zip(gen, generated, strict=True):
            outs[i].text, outs[i].completion_ids, outs[i].finish_reason = g.text, g.ids, g.finish_reason
            if rows[i].logprobs is not None:
                outs[i].completion_scores = _token_scores(g.ids, g.step_logits, rows[i].logprobs)
        return outs

    @torch.inference_mode()
    def _score_prompts(self, rows: list[Row]) -> list[TokenScores | None]:
        input_ids, mask = left_padded([r.prompt_ids for r in rows], self.tokenizer.pad_token_id,
                                      self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids, attention_mask=mask,
                            position_ids=position_ids).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        width = input_ids.shape[1]
        result: list[TokenScores | None] = []
        for i, row in enumerate(rows):
            if not (row.echo and row.logprobs is not None):
                result.append(None)
                continue
            start = width - len(row.prompt_ids)
            scores = TokenScores(ids=list(row.prompt_ids), logprobs=[None], top=[None])
            for pos in range(start + 1, width):
                dist = logprobs[i, pos - 1]
                scores.logprobs.append(float(dist[input_ids[i, pos]]))
                scores.top.append(_top(dist, row.logprobs))
            result.append(scores)
        return result


def _token_scores(ids: list[int], step_logits: list[torch.Tensor] | None, k: int) -> TokenScores:
    scores = TokenScores()
    for tok, logits in zip(ids, step_logits or [], strict=True):
        dist = torch.log_softmax(logits.float(), dim=-1)
        scores.ids.append(tok)
        scores.logprobs.append(float(dist[tok]))
        scores.top.append(_top(dist, k))
    return scores


def _top(dist: torch.Tensor, k: int) -> dict[int, float]:
    if k <= 0:
        return {}
    values, indices = dist.topk(k)
    return {int(t): float(v) for t, v in zip(indices, values, strict=True)}
