"""Tool-integrated reasoning: Python blocks the model writes run in the sandbox.

The model writes ````` ```python ... ``` ````` and then ````` ```output `````, as in
ToRA / Qwen2.5-Math TIR: generation stops at ````` ```output `````; when the text ends
in a closed Python block, that block runs in :mod:`sftlab.evaluate.sandbox` (a fresh
isolated interpreter, ``timeout`` seconds), its output (stdout, else the end of stderr)
is appended as ````` ```output\\n...\\n``` ````` and generation continues. Up to
``max_calls`` calls and ``time_budget`` sandbox seconds per sample; every call (code,
outcome, output, seconds) is recorded. Each continuation's randomness depends on
(seed, item, sample index, call) only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

OUTPUT_OPEN = "```output"
_BLOCK = re.compile(r"```python\n(.*?)```\s*$", re.DOTALL)
_OUTPUT_CHARS = 1000


class ToolUse(BaseModel):
    """The settings (a benchmark's ``tool_use`` key, ``--tool-use`` JSON)."""

    model_config = ConfigDict(extra="forbid")

    max_calls: int = Field(4, ge=1)
    time_budget: float = Field(60.0, gt=0)  # sandbox seconds per sample, all calls
    timeout: float = Field(10.0, gt=0)  # seconds per call


@dataclass
class _Chain:
    item: int
    sample: int
    text: str = ""
    tokens: int = 0
    seconds: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)


def last_block(text: str) -> str | None:
    """The code of a Python block the text ends with (closed, then only spaces)."""
    m = _BLOCK.search(text)
    return m.group(1) if m else None


def generate_with_tools(backend: Any, requests: list, keys: list[str], tools: ToolUse,
                        ) -> tuple[list[list[str]], list[list[dict[str, Any]]]]:
    """Samples for ``requests`` (n each; ``keys`` the item ids) with code execution.
    Returns each item's texts and per-sample records (``tool_calls``, ``tokens``)."""
    from sftlab.evaluate.sandbox import run_programs

    chains = [[_Chain(i, s) for s in range(r.n)] for i, r in enumerate(requests)]
    first = [replace(r, stop=(*r.stop, OUTPUT_OPEN), key=keys[i]) for i, r in enumerate(requests)]
    for i, res in enumerate(backend.generate(first)):
        for c, text, tokens in zip(chains[i], res.texts, _counts(res), strict=True):
            c.text, c.tokens = text, tokens
    pending = [c for group in chains for c in group]
    while pending:
        ready = [(c, code) for c in pending if len(c.calls) < tools.max_calls
                 and c.seconds < tools.time_budget and (code := last_block(c.text)) is not None]
        if not ready:
            break
        results = run_programs([code for _, code in ready], timeout=tools.timeout)
        for (c, code), r in zip(ready, results, strict=True):
            err = r.stderr_tail.strip().splitlines()
            shown = (r.stdout_tail or (err[-1] if err else ""))[-_OUTPUT_CHARS:]
            c.seconds += r.duration
            c.calls.append({"code": code, "outcome": r.outcome, "output": shown,
                            "seconds": round(r.duration, 3)})
            c.text += f"{OUTPUT_OPEN}\n{shown.rstrip()}\n```\n"
        step = [replace(requests[c.item], prompt=requests[c.item].prompt + c.text, n=1,
                        stop=(*requests[c.item].stop, OUTPUT_OPEN),
                        max_new_tokens=max(1, requests[c.item].max_new_tokens - c.tokens),
                        key=f"{keys[c.item]}\x00{c.sample}\x00tool{len(c.calls)}")
                for c, _ in ready]
        for (c, _), res in zip(ready, backend.generate(step), strict=True):
            c.text += res.texts[0]
            c.tokens += _counts(res)[0]
        pending = [c for c, _ in ready if c.tokens < requests[c.item].max_new_tokens]
    texts = [[c.text for c in group] for group in chains]
    records = [[{"tokens": c.tokens, "tool_calls": c.calls} for c in group] for group in chains]
    return texts, records


def _counts(result: Any) -> list[int]:
    counts = list(result.n_completion_tokens)
    return counts if len(counts) == len(result.texts) else [0] * len(result.texts)
