"""OpenAI-compatible request bodies accepted by ``sftlab serve`` (pydantic-validated).

Only the fields sftlab acts on are declared; unknown fields (``user``,
``presence_penalty``, ...) are accepted and ignored, as most OpenAI-compatible servers
do, so stock clients work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Prompt = str | list[str] | list[int] | list[list[int]]
SEED_RANGE = 2**63  # a seed (plus the sample index) must fit torch's 64-bit generator


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of ``sftlab serve`` (each limit is a ``--flag``)."""

    max_body_bytes: int = 2 * 2**20  # request body; larger gets 413 before it is parsed
    max_rows: int = 128  # prompts x n in one request
    max_request_tokens: int = 131_072  # prompt tokens + max_tokens, summed over the rows
    body_timeout_s: float = 30.0  # a body still arriving after this gets 408


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-SEED_RANGE, lt=SEED_RANGE - 64)
    stream: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 8 or any(not s for s in stops)):
            raise ValueError("stop: at most 8 non-empty strings")
        return stops

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool) -> bool:
        if value:
            raise ValueError("stream: streaming is not supported by sftlab serve")
        return value


class CompletionRequest(_Sampling):
    prompt: Prompt
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and not value:
            raise ValueError("prompt: must not be an empty list")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
