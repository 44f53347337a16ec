"""The contract every evaluation backend implements (hf, vllm, openai, replay).

A backend answers two request types, lm-evaluation-harness style:

- ``loglikelihood``: the summed log-probability of ``continuation`` given
  ``context`` (and whether it is the greedy continuation);
- ``generate``: text generated after ``prompt`` until a stop sequence or
  ``max_new_tokens``; ``n`` samples per request (greedy when temperature == 0).

Backends receive whole lists so that they can sort by length, batch, and share
work (a few-shot prefix common to many requests is computed once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float  # sum of log-probabilities of the continuation tokens
    is_greedy: bool
    n_tokens: int


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    key: str = ""  # the item's identity for per-sample seeds; "" = the prompt itself


@dataclass(frozen=True)
class GenerateResult:
    texts: list[str]  # n texts, each cut before the first stop sequence
    n_prompt_tokens: int = 0
    n_completion_tokens: list[int] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """What tasks and judges may call on a model."""

    name: str

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResult]: ...

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]: ...

    def provenance(self) -> dict:
        """Backend, model, adapter, dtype, batch size, library versions."""
        ...
