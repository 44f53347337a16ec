"""Recursive self-aggregation (RSA, arXiv 2509.26626): a population of solutions,
improved by asking the model to aggregate subsets of it, loop after loop.

Loop 0 draws ``population`` samples per item (the benchmark's sampling settings). Each
of ``loops`` loops builds ``population`` prompts per item, each from ``subset``
candidates drawn without replacement from the current population (seeded by (seed,
item, loop, index)), and generates one improved solution for each: the new population.
The task scores every loop's population; pass@k and cons@k (math, gsm8k) are reported
per loop (``extra["rsa"]``), the last population is the result.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

PROMPT = ("{problem}\n\nHere are {k} candidate solutions to this problem:\n\n{candidates}\n\n"
          "Some may be wrong. Check them, combine what is right, and write one improved, "
          "complete solution, ending with the final answer in the same format.\n\n")


class SelfAggregation(BaseModel):
    """The settings (a benchmark's ``self_aggregation`` key, ``--self-aggregation`` JSON)."""

    model_config = ConfigDict(extra="forbid")

    population: int = Field(16, ge=2)
    subset: int = Field(4, ge=1)
    loops: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _subset_fits(self) -> SelfAggregation:
        if self.subset > self.population:
            raise ValueError(f"subset ({self.subset}) is more than population ({self.population})")
        return self


def aggregation_prompt(problem: str, candidates: list[str]) -> str:
    shown = "\n\n".join(f"Solution {i}:\n{c.strip()}" for i, c in enumerate(candidates, 1))
    return PROMPT.format(problem=problem, k=len(candidates), candidates=shown)


def _rng(seed: int, item: str, loop: int, index: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{item}\x00rsa{loop}\x00{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def self_aggregate(backend: Any, requests: list, keys: list[str], problems: list[str],
                   render: Any, rsa: SelfAggregation, seed: int,
                   on_loop: Any) -> list[list[str]]:
    """The last population of each item; ``on_loop(loop, populations)`` sees every loop's
    (loop 0 = the first samples). ``problems`` are the task prompts before any study
    template, ``render`` applies it to an aggregation prompt."""
    first = [replace(r, n=rsa.population, key=keys[i]) for i, r in enumerate(requests)]
    populations = [list(res.texts) for res in backend.generate(first)]
    on_loop(0, populations)
    for loop in range(1, rsa.loops + 1):
        prompts = []
        for i, r in enumerate(requests):
            for j in range(rsa.population):
                chosen = _rng(seed, keys[i], loop, j).sample(populations[i], rsa.subset)
                prompts.append(replace(r, prompt=render(aggregation_prompt(problems[i], chosen)), n=1,
                                       key=f"{keys[i]}\x00rsa{loop}\x00{j}"))
        texts = [res.texts[0] for res in backend.generate(prompts)]
        populations = [texts[i * rsa.population:(i + 1) * rsa.population]
                       for i in range(len(requests))]
        on_loop(loop, populations)
    return populations
