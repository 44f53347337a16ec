"""The synthetic-data spec (YAML): a grid of conditions, a generator, a judge and filters.

``load_spec(path)`` reads and validates a spec file, reporting every problem with its
key path and line (``synth.yaml:7: judge.threshold: ...``); ``parse_spec(raw)``
validates a mapping (a study's inline ``synth:``). Keys (see the README)::

    conditions:      {name: [values, ...], ...}   # their product is the grid
    per_condition:   4                            # problems asked for per condition
    seed:            0
    prompt:          "Write a new {field} problem of difficulty {difficulty} ..."
    generator:       {base_url, model, api_key_env, temperature, max_tokens, concurrency}
    judge:           {... the same keys, threshold: 7}   # 1-10 score; null: no judge
    resolve:         {n: 4, min_pass: 0.5, max_pass: 1.0}  # null: no re-solving
    dedupe:          {threshold: 0.8}                      # null: no dedupe
    decontaminate:   {files: [...], ngram: 13}             # null: none
    fields:          {problem: problem, reasoning: reasoning, answer: answer}

Endpoints also take ``timeout``, ``max_retries``, ``backoff_base``, ``backoff_max``
(the judge client's) and ``structured_output`` (send ``response_format``). None of
those, nor ``base_url``, ``api_key_env`` or ``concurrency``, change what is generated:
:func:`spec_identity` leaves them out.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sftlab.errors import UserError

SYNTH_VERSION = "1"  # changes whenever the prompts, parsing or filters change their output
STAGES = ("generated", "parsed", "judged", "resolved", "unique", "clean", "kept")  # the funnel
TRANSPORT_KEYS = ("base_url", "api_key_env", "concurrency", "timeout", "max_retries",
                  "backoff_base", "backoff_max")
Value = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    """A model behind an OpenAI-compatible chat API, and how to ask it."""

    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    max_tokens: int = Field(2048, gt=0)
    concurrency: int = Field(8, gt=0, le=1024)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_base: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, ge=0)
    structured_output: bool = True  # send response_format (JSON schema); parsed from text anyway

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~sftlab.evaluate.judge.JudgeClient`."""
        return self.model_dump(exclude={"structured_output"})


class JudgeSettings(Endpoint):
    temperature: float = Field(0.0, ge=0, le=2)
    threshold: float = Field(7.0, ge=1, le=10)  # keep rows the judge scores at least this


class ResolveSettings(_Strict):
    """Re-solving: ``n`` solutions per problem, checked against the stated answer.

    The endpoint keys default to the generator's (the same model re-solves)."""

    n: int = Field(4, gt=0, le=64)
    min_pass: float = Field(0.5, ge=0, le=1)
    max_pass: float = Field(1.0, ge=0, le=1)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    concurrency: int | None = Field(None, gt=0, le=1024)
    timeout: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    backoff_base: float | None = Field(None, ge=0)
    backoff_max: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _window(self) -> ResolveSettings:
        if self.min_pass > self.max_pass:
            raise ValueError(f"min_pass ({self.min_pass}) is above max_pass ({self.max_pass})")
        return self

    def endpoint(self, generator: Endpoint) -> Endpoint:
        """The re-solver: the generator, with the keys given here replaced."""
        own = {k: v for k, v in self.model_dump(exclude={"n", "min_pass", "max_pass"}).items()
               if v is not None}
        return Endpoint(**{**generator.model_dump(), **own, "structured_output": False})


class DedupeSettings(_Strict):
    threshold: float = Field(0.8, gt=0, le=1)  # Jaccard similarity of word n-gram sets
    ngram: int = Field(3, gt=0)
    num_perm: int = Field(128, ge=16, le=1024)


class DecontaminateSettings(_Strict):
    files: list[str] = Field(default_factory=list)  # relative to the spec (or study) file
    ngram: int = Field(13, ge=3)
    benchmarks: bool = True  # in a study: also its benchmarks' local evaluation files


class OutputFields(_Strict):
    """The JSON keys the generator is asked for, by role."""

    problem: str = "problem"
    reasoning: str = "reasoning"
    answer: str = "answer"

    @model_validator(mode="after")
    def _distinct(self) -> OutputFields:
        keys = [self.problem, self.reasoning, self.answer]
        if len(set(keys)) < 3:
            raise ValueError(f"the three keys must differ, got {keys}")
        return self


class SynthSpec(_Strict):
    """A whole synthetic-data spec."""

    conditions: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
                     Annotated[list[Value], Field(min_length=1)]] = Field(min_length=1)
    per_condition: int = Field(gt=0)
    seed: int = 0
    prompt: str
    generator: Endpoint
    judge: JudgeSettings | None = None
    resolve: ResolveSettings | None = None
    dedupe: DedupeSettings | None = Field(default_factory=DedupeSettings)
    decontaminate: DecontaminateSettings | None = Field(default_factory=DecontaminateSettings)
    fields: OutputFields = Field(default_factory=OutputFields)

    @field_validator("conditions")
    @classmethod
    def _distinct_values(cls, conditions: dict[str, list]) -> dict[str, list]:
        problems = [f"{name}: duplicate values {sorted({str(v) for v in vals if vals.count(v) > 1})}"
                    for name, vals in conditions.items() if len(set(map(str, vals))) < len(vals)]
        problems += [f"{name}: a condition may not be named like a funnel stage "
                     f"({', '.join(STAGES)})" for name in conditions if name in STAGES]
        if problems:
            raise ValueError("; ".join(problems))
        return conditions

    @field_validator("prompt")
    @classmethod
    def _prompt_names_conditions(cls, prompt: str, info: ValidationInfo) -> str:
        problems = prompt_problems(prompt, list(info.data.get("conditions") or {}))
        if problems and "conditions" in info.data:  # else the conditions' own error is enough
            raise ValueError("; ".join(problems))
        return prompt

    def grid_size(self) -> int:
        size = 1
        for values in self.conditions.values():
            size *= len(values)
        return size


def prompt_problems(prompt: str, names: list[str]) -> list[str]:
    """What is wrong with a prompt template over the condition ``names``."""
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as err:
        return [f"cannot parse the template ({err}); write literal braces as '{{{{' and '}}}}'"]
    problems = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            problems.append(f"'{{{name}...}}': only plain {{name}} placeholders are allowed")
        elif name not in names:
            problems.append(f"'{{{name}}}' is not a condition (conditions: {', '.join(names)}); "
                            "write literal braces as '{{' and '}}'")
    return problems


def spec_identity(spec: SynthSpec) -> dict[str, Any]:
    """What about a spec changes the rows it yields (not how the endpoints are reached).

    Decontamination files appear as given; :func:`sftlab.synth.study.synth_key`
    replaces them by their content hashes."""
    data = spec.model_dump(mode="json")
    for part in ("generator", "judge", "resolve"):
        if data.get(part) is not None:
            for key in TRANSPORT_KEYS:
                data[part].pop(key, None)
    return {"synth_version": SYNTH_VERSION, **data}


# --- loading and errors -----------------------------------------------------------------


def parse_spec(raw: Any, *, where: str = "synth", lines: dict | None = None) -> SynthSpec:
    """Validate a spec mapping; raise UserError listing every problem with its key path."""
    if not isinstance(raw, dict):
        raise UserError("a synth spec must be a mapping (conditions:, per_condition:, "
                        "prompt:, generator:, ...)", where=where)
    try:
        return SynthSpec.model_validate(raw)
    except ValidationError as err:
        raise UserError(validation_problems(err, lines or {}, where), where=where) from None


def validation_problems(err: ValidationError, lines: dict, where: str) -> list[str]:
    """One line per problem: ``[file:line: ]key.path: message``."""
    from sftlab.study.spec import _key_path, _nearest_line, _unknown

    out: dict[str, str] = {}
    for e in err.errors():
        loc = tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = _unknown("key", str(loc[-1]), _known_keys(loc[:-1]))
        elif e["type"] == "missing":
            msg = "required key is missing"
        key = _key_path(loc)
        line = _nearest_line(loc, lines)
        prefix = f"{where}:{line}: " if line else ""
        out.setdefault(key, f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}")
    return list(out.values())


_NESTED: dict[str, type[BaseModel]] = {
    "generator": Endpoint, "judge": JudgeSettings, "resolve": ResolveSettings,
    "dedupe": DedupeSettings, "decontaminate": DecontaminateSettings, "fields": OutputFields,
}


def _known_keys(loc: tuple) -> list[str]:
    model = _NESTED.get(str(loc[-1])) if loc else SynthSpec
    return list((model or SynthSpec).model_fields)


def load_spec(path: str | Path) -> SynthSpec:
    """Read and validate a spec file."""
    from sftlab.study.spec import _compose, _key_lines

    path = Path(path)
    if not path.is_file():
        raise UserError(f"synth spec not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        node, raw = _compose(text)  # the study loader: aliases refused, parsed once
        lines = _key_lines(node) if node is not None else {}
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", where=str(path)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"invalid YAML: {getattr(err, 'problem', None) or err}",
                        where=where) from None
    return parse_spec(raw, where=str(path), lines=lines)
