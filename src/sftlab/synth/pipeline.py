"""``run_synth(spec, out)``: generate, filter and write a synthetic data set, with its funnel.

Stages, in order, each counted per condition (:data:`STAGES`, the columns of
``yield.csv``); a stage that the spec leaves out (``judge: null`` ...) passes every row:

``generated``  the generator answered (``per_condition`` requests per condition,
               request ``i`` of a condition sent with ``seed`` derived from the spec's
               ``seed`` and ``i``, so each is its own request);
``parsed``     the answer is a JSON object with the problem, reasoning and answer;
``judged``     the judge scored it at least ``threshold`` (and did not say the problem is
               ill-posed or the answer inconsistent); an unreadable verdict fails;
``resolved``   of ``n`` fresh solutions, a fraction in ``[min_pass, max_pass]`` reaches
               the stated answer (Math-Verify, :mod:`sftlab.evaluate.math_check`);
``unique``     not an exact or near duplicate of an earlier row (:mod:`.near_duplicates`);
``clean``      no n-gram overlap with the evaluation sets (:mod:`.contamination`);
``kept``       written to ``data.jsonl``.

Every request goes through :class:`~sftlab.evaluate.judge.JudgeClient` (bounded
concurrency, retries with backoff, ``Retry-After``, timeouts) and its SQLite cache,
keyed by the full request: a run killed at any point and started again asks only what
was never answered, and yields the same rows. A request that still fails after its
retries is counted (``failed_requests``) and never cached; the output is then marked
incomplete (``summary.json``: ``complete: false``) and a re-run asks it again.

Files written to ``out`` (each atomically; ``summary.json`` last):
``data.jsonl`` (kept rows: ``instruction``/``response`` for SFT, ``prompt``/``answer``
for RL, ``problem``/``reasoning``, ``provenance``), ``yield.csv``, ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab import atomic, jsonio
from sftlab.data.sampling import derive_seed
from sftlab.errors import UserError
from sftlab.evaluate.judge import JudgeClient, JudgmentCache
from sftlab.synth import prompts
from sftlab.synth.contamination import build_index
from sftlab.synth.near_duplicates import unique_mask
from sftlab.synth.prompts import Parsed, Verdict
from sftlab.synth.spec import STAGES, Endpoint, SynthSpec, spec_identity

log = logging.getLogger(__name__)

CHUNK = 4096  # requests per batch handed to the client (bounds memory, shows progress)
CACHE_NAME = "cache.sqlite"


@dataclass
class Row:
    """One generation request and what became of it."""

    condition: int
    sample: int
    seed: int
    stage: int = -1  # index in STAGES of the last stage passed; -1: no answer
    parsed: Parsed | None = None
    verdict: Verdict | None = None
    solutions: list[str | None] = field(default_factory=list)
    solved: list[bool] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"c{self.condition}-s{self.sample}"


@dataclass
class SynthResult:
    """What a run produced: the funnel per condition and in total, and the requests."""

    out: Path
    conditions: list[dict[str, Any]]
    funnel: list[dict[str, int]]  # per condition, keys STAGES
    requests: dict[str, int]
    failed_requests: int
    errors: list[str]
    reference_files: list[str]

    @property
    def totals(self) -> dict[str, int]:
        return {s: sum(f[s] for f in self.funnel) for s in STAGES}

    @property
    def complete(self) -> bool:
        return self.failed_requests == 0

    def to_json(self) -> dict[str, Any]:
        return {**self.totals, "complete": self.complete,
                "failed_requests": self.failed_requests, "requests": self.requests,
                "out": str(self.out), "data": str(self.out / "data.jsonl"),
                "yield": str(self.out / "yield.csv")}


def conditions_of(spec: SynthSpec) -> list[dict[str, Any]]:
    """The grid: one dict per condition, in the product order of ``conditions``."""
    names = list(spec.conditions)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*spec.conditions.values())]


def run_synth(spec: SynthSpec, out: str | Path, *, base_dir: str | Path | None = None,
              cache_path: str | Path | None = None, reference_files: list[Path] | None = None,
              on_stage: Callable[[str, int], None] | None = None) -> SynthResult:
    """Run ``spec`` into the folder ``out``; see the module docstring.

    ``base_dir`` anchors relative ``decontaminate.files`` (default: the cwd);
    ``cache_path`` is the request cache (default ``out/cache.sqlite``);
    ``reference_files`` are decontaminated against too (a study's benchmarks);
    ``on_stage(stage, rows)`` is called as each stage starts."""
    out = Path(out)
    files = _reference_files(spec, Path(base_dir or "."), reference_files or [])
    index = build_index(files, spec.decontaminate.ngram) if spec.decontaminate else None
    cache = JudgmentCache(Path(cache_path) if cache_path else out / CACHE_NAME)
    clients = _clients(spec, cache)
    notify = on_stage or (lambda stage, n: None)
    errors: list[str] = []
    try:
        conditions = conditions_of(spec)
        rows = _generate(spec, conditions, clients["generator"], errors, notify)
        if spec.judge is not None:
            _judge(spec, rows, clients["judge"], errors, notify)
        else:
            _pass_through(rows, "judged")
        if spec.resolve is not None:
            _resolve(spec, rows, clients["resolve"], errors, notify)
        else:
            _pass_through(rows, "resolved")
        _dedupe(spec, rows, notify)
        _decontaminate(rows, index, notify)
        _pass_through(rows, "kept")
        requests = _request_stats(clients.values())
    finally:
        for client in clients.values():
            client.close()
    result = SynthResult(out, conditions, _funnel(rows, len(conditions)), requests,
                         requests["failures"], errors[:10], [str(f) for f in files])
    _write_outputs(spec, result, rows, conditions)
    return result


def _reference_files(spec: SynthSpec, base: Path, extra: list[Path]) -> list[Path]:
    if spec.decontaminate is None:
        return []
    files = [p if (p := Path(f).expanduser()).is_absolute() else base / p
             for f in spec.decontaminate.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError([f"decontaminate.files: file not found: {m}" for m in missing])
    return files + [Path(f) for f in extra]


def _clients(spec: SynthSpec, cache: JudgmentCache) -> dict[str, JudgeClient]:
    endpoints: dict[str, Endpoint] = {"generator": spec.generator}
    if spec.judge is not None:
        endpoints["judge"] = spec.judge
    if spec.resolve is not None:
        endpoints["resolve"] = spec.resolve.endpoint(spec.generator)
    options = {name: e.client_options() for name, e in endpoints.items()}
    for o in options.values():
        o.pop("threshold", None)
    clients: dict[str, JudgeClient] = {}
    try:
        for name, o in options.items():
            clients[name] = JudgeClient(o.pop("base_url"), o.pop("model"), cache=cache, **o)
    except UserError as err:
        for client in clients.values():
            client.close()
        raise UserError(err.problems, where=f"synth {name}") from None
    return clients


def _ask(client: JudgeClient, messages: list, extra: list[dict], errors: list[str]) -> list:
    """The answers' texts (None where a request failed after its retries), in chunks."""
    texts: list[str | None] = []
    for start in range(0, len(messages), CHUNK):
        answers = client.judge_many(messages[start:start + CHUNK], extra[start:start + CHUNK])
        for a in answers:
            if a.text is None and a.error and len(errors) < 10:
                errors.append(f"{client.model}: {a.error}")
        texts += [a.text for a in answers]
    return texts


def _generate(spec: SynthSpec, conditions: list[dict], client: JudgeClient, errors: list[str],
              notify) -> list[Row]:
    rows = [Row(c, i, derive_seed(spec.seed, i) % 2**31)
            for c in range(len(conditions)) for i in range(spec.per_condition)]
    notify("generated", len(rows))
    fmt = {"response_format": prompts.row_schema(spec.fields)} \
        if spec.generator.structured_output else {}
    messages = [prompts.generation_messages(spec.prompt, conditions[r.condition], spec.fields)
                for r in rows]
    texts = _ask(client, messages, [{"seed": r.seed, **fmt} for r in rows], errors)
    for row, text in zip(rows, texts, strict=True):
        if text is None:
            continue
        row.stage = 0
        row.parsed = prompts.parse_row(text, spec.fields)
        if row.parsed is not None:
            row.stage = 1
    return rows


def _at(rows: list[Row], stage: str) -> list[Row]:
    """The rows that passed the stage before ``stage``."""
    return [r for r in rows if r.stage == STAGES.index(stage) - 1]


def _pass_through(rows: list[Row], stage: str) -> None:
    for row in _at(rows, stage):
        row.stage += 1


def _judge(spec: SynthSpec, rows: list[Row], client: JudgeClient, errors: list[str],
           notify) -> None:
    todo = _at(rows, "judged")
    notify("judged", len(todo))
    fmt = {"response_format": prompts.verdict_format()} if spec.judge.structured_output else {}
    messages = [prompts.judge_messages(r.parsed.problem, r.parsed.answer) for r in todo]
    texts = _ask(client, messages, [dict(fmt) for _ in todo], errors)
    for row, text in zip(todo, texts, strict=True):
        row.verdict = prompts.parse_verdict(text) if text is not None else Verdict(None)
        v = row.verdict
        if (v.score is not None and v.score >= spec.judge.threshold
                and v.well_posed is not False and v.answer_consistent is not False):
            row.stage += 1


def _resolve(spec: SynthSpec, rows: list[Row], client: JudgeClient, errors: list[str],
             notify) -> None:
    from sftlab.evaluate.math_check import verify_batch

    settings = spec.resolve
    todo = _at(rows, "resolved")
    notify("resolved", len(todo))
    messages = [prompts.solve_messages(r.parsed.problem) for r in todo for _ in range(settings.n)]
    extra = [{"seed": j} for _ in todo for j in range(settings.n)]
    texts = _ask(client, messages, extra, errors)
    pairs = [(f"\\boxed{{{r.parsed.answer}}}", t or "")
             for r, t in zip((r for r in todo for _ in range(settings.n)), texts, strict=True)]
    checks = verify_batch(pairs) if pairs else []
    for k, row in enumerate(todo):
        part = slice(k * settings.n, (k + 1) * settings.n)
        row.solutions = texts[part]
        row.solved = [bool(c.correct) and t is not None
                      for c, t in zip(checks[part], texts[part], strict=True)]
        rate = sum(row.solved) / settings.n
        if settings.min_pass <= rate <= settings.max_pass:
            row.stage += 1


def _dedupe(spec: SynthSpec, rows: list[Row], notify) -> None:
    todo = _at(rows, "unique")
    notify("unique", len(todo))
    if spec.dedupe is None:
        keep = [True] * len(todo)
    else:
        d = spec.dedupe
        keep = unique_mask([r.parsed.problem for r in todo], threshold=d.threshold,
                           ngram=d.ngram, num_perm=d.num_perm)
    for row, ok in zip(todo, keep, strict=True):
        row.stage += ok


def _decontaminate(rows: list[Row], index, notify) -> None:
    todo = _at(rows, "clean")
    notify("clean", len(todo))
    for row in todo:
        if index is None or not index.contaminated(row.parsed.problem):
            row.stage += 1


def _funnel(rows: list[Row], n_conditions: int) -> list[dict[str, int]]:
    funnel = [dict.fromkeys(STAGES, 0) for _ in range(n_conditions)]
    for row in rows:
        for stage in STAGES[:row.stage + 1]:
            funnel[row.condition][stage] += 1
    return funnel


def _request_stats(clients) -> dict[str, int]:
    total = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0}
    for client in clients:
        for key in total:
            total[key] += client.stats[key]
    return total


# --- outputs ------------------------------------------------------------------------------


def kept_row(spec: SynthSpec, row: Row, condition: dict[str, Any]) -> dict[str, Any]:
    """One line of ``data.jsonl``: training shapes first, then provenance."""
    p = row.parsed
    return {
        "id": row.id, "instruction": p.problem, "response": prompts.response_text(p),
        "prompt": p.problem, "answer": p.answer, "problem": p.problem, "reasoning": p.reasoning,
        "provenance": {"condition": condition,
                       "generator": {"model": spec.generator.model,
                                     "temperature": spec.generator.temperature,
                                     "seed": row.seed},
                       "judge": _judge_provenance(spec, row.verdict),
                       "resolve": _resolve_provenance(spec, row)},
    }


def _judge_provenance(spec: SynthSpec, v: Verdict | None) -> dict | None:
    if spec.judge is None or v is None:
        return None
    return {"model": spec.judge.model, "score": v.score, "threshold": spec.judge.threshold,
            "well_posed": v.well_posed, "answer_consistent": v.answer_consistent,
            "reason": v.reason}


def _resolve_provenance(spec: SynthSpec, row: Row) -> dict | None:
    from sftlab.evaluate.math_check import extract_boxed

    if spec.resolve is None:
        return None
    answers = [extract_boxed(s) if s is not None else None for s in row.solutions]
    return {"model": spec.resolve.endpoint(spec.generator).model, "n": spec.resolve.n,
            "answers": answers, "correct": row.solved, "passes": sum(row.solved),
            "pass_rate": sum(row.solved) / spec.resolve.n}


def yield_csv(conditions: list[dict[str, Any]], funnel: list[dict[str, int]]) -> str:
    """``yield.csv``: one row per condition, its fields then a column per stage."""
    names = list(conditions[0]) if conditions else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*names, *STAGES])
    for condition, counts in zip(conditions, funnel, strict=True):
        writer.writerow([*(condition[n] for n in names), *(counts[s] for s in STAGES)])
    return buffer.getvalue()


def _write_outputs(spec: SynthSpec, result: SynthResult, rows: list[Row],
                   conditions: list[dict]) -> None:
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    kept = [kept_row(spec, r, conditions[r.condition]) for r in rows
            if r.stage == STAGES.index("kept")]
    atomic.write_text(out / "data.jsonl", "".join(jsonio.line(k) for k in kept))
    atomic.write_text(out / "yield.csv", yield_csv(conditions, result.funnel))
    summary = {**result.to_json(), "errors": result.errors, "funnel": result.funnel,
               "conditions": conditions, "reference_files": result.reference_files,
               "spec": spec_identity(spec)}
    atomic.write_json(out / "summary.json", summary, indent=1)
    if not result.complete:
        log.warning("synth: %d request(s) failed after retries (first: %s); the output in %s "
                    "is incomplete: run again to ask them again (answers so far are cached)",
                    result.failed_requests, result.errors[:1], out)
