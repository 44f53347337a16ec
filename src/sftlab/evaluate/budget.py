"""Budget forcing (s1, Muennighoff et al. 2025) for models with a thinking delimiter.

Thinking is generated until the end-of-thinking text (``end``, e.g. ``</think>``), EOS,
or the thinking budget ``max_thinking`` (tokens). Then:

- budget reached: the end text and ``answer_prefix`` (default ``"\\nFinal Answer:"``)
  are appended and the answer is generated;
- thinking ended before ``min_thinking`` tokens: the end is suppressed, ``wait``
  (default ``"Wait"``) is appended and thinking continues with the remaining budget,
  up to ``max_waits`` times; after that the end text is appended as the model wrote it.

Each continuation is a request of its own whose randomness depends on (seed, item,
sample index, step) only. Recorded per sample: thinking tokens, waits, capped or not,
answer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BudgetForcing(BaseModel):
    """The settings (a benchmark's ``budget_forcing`` key, ``--budget-forcing`` JSON)."""

    model_config = ConfigDict(extra="forbid")

    end: str = Field(min_length=1)  # the end-of-thinking text
    max_thinking: int | None = Field(None, gt=0)
    min_thinking: int | None = Field(None, gt=0)
    wait: str = "Wait"
    max_waits: int = Field(1, ge=0)
    answer_prefix: str = "\nFinal Answer:"
    answer_tokens: int | None = Field(None, gt=0)  # default: the task's cap

    @model_validator(mode="after")
    def _min_below_max(self) -> BudgetForcing:
        if self.max_thinking and self.min_thinking and self.min_thinking > self.max_thinking:
            raise ValueError(f"min_thinking ({self.min_thinking}) is more than max_thinking "
                             f"({self.max_thinking})")
        return self


@dataclass
class _Chain:
    item: int
    sample: int
    text: str = ""
    thinking_tokens: int = 0
    waits: int = 0
    capped: bool = False
    answer_tokens: int = 0
    steps: list[int] = field(default_factory=list)


def generate_forced(backend: Any, requests: list, keys: list[str], bf: BudgetForcing,
                    ) -> tuple[list[list[str]], list[list[dict[str, Any]]]]:
    """Budget-forced samples for ``requests`` (GenerateRequests, n samples each; ``keys``
    the item ids). Returns each item's texts (thinking, end text, answer) and per-sample
    records."""
    from dataclasses import replace

    chains = [[_Chain(i, s) for s in range(r.n)] for i, r in enumerate(requests)]
    budget = [bf.max_thinking or r.max_new_tokens for r in requests]
    first = [replace(r, stop=(bf.end,), max_new_tokens=budget[i], key=keys[i])
             for i, r in enumerate(requests)]
    for i, res in enumerate(backend.generate(first)):
        for chain, text, tokens in zip(chains[i], res.texts, _counts(res), strict=True):
            chain.text, chain.thinking_tokens = text, tokens
    pending = [c for group in chains for c in group]
    while True:
        more = []
        for c in pending:
            left = budget[c.item] - c.thinking_tokens
            c.capped = bf.max_thinking is not None and left <= 0
            if (not c.capped and bf.min_thinking and c.thinking_tokens < bf.min_thinking
                    and c.waits < bf.max_waits):
                c.waits += 1
                c.text += bf.wait
                more.append(c)
        if not more:
            break
        step = [replace(requests[c.item], prompt=requests[c.item].prompt + c.text, n=1,
                        stop=(bf.end,), max_new_tokens=budget[c.item] - c.thinking_tokens,
                        key=f"{keys[c.item]}\x00{c.sample}\x00wait{c.waits}") for c in more]
        for c, res in zip(more, backend.generate(step), strict=True):
            c.text += res.texts[0]
            c.thinking_tokens += _counts(res)[0]
        pending = more
    flat = [c for group in chains for c in group]
    for c in flat:
        c.text += bf.end + (bf.answer_prefix if c.capped else "")
    answers = [replace(requests[c.item], prompt=requests[c.item].prompt + c.text, n=1,
                       max_new_tokens=bf.answer_tokens or requests[c.item].max_new_tokens,
                       key=f"{keys[c.item]}\x00{c.sample}\x00answer") for c in flat]
    for c, res in zip(flat, backend.generate(answers), strict=True):
        c.text += res.texts[0]
        c.answer_tokens = _counts(res)[0]
    texts = [[c.text for c in group] for group in chains]
    records = [[{"thinking_tokens": c.thinking_tokens, "waits": c.waits, "capped": c.capped,
                 "answer_tokens": c.answer_tokens} for c in group] for group in chains]
    return texts, records


def _counts(result: Any) -> list[int]:
    """Generated tokens per sample (0 where the backend does not say)."""
    counts = list(result.n_completion_tokens)
    return counts if len(counts) == len(result.texts) else [0] * len(result.texts)
