"""`sftlab report STUDY`: options, output layout, JSON summary and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftlab.cli import main
from sftlab.report.synthetic import SyntheticStudy, make_study

STUDY = """
name: tiny-report
seed: 7
output_dir: {out}
models:
  - {{name: olmo-tiny, path: /models/olmo, family: olmo}}
  - {{name: qwen-tiny, path: /models/qwen}}
datasets:
  - {{name: a, format: alpaca, path: a.json}}
  - {{name: b, format: alpaca, path: b.json}}
grid: {{sizes: [1000], methods: [full, lora], settings: [single, all]}}
methods:
  full: {{learning_rate: 1.0e-5, batch_size: 8, epochs: 2}}
  lora: {{learning_rate: 1.0e-4, batch_size: 8, epochs: 2}}
report:
  categories: {{Reasoning: [gsm8k], Knowledge: [mmlu]}}
  bootstrap_resamples: 100
"""


@pytest.fixture
def study(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "runs" / "tiny-report"
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(out=out))
    spec = SyntheticStudy(datasets=["a", "b"], sizes=[1000], settings=["single", "all"], epochs=2,
                          items=12, benchmarks=[("gsm8k", 0), ("gsm8k", 4), ("mmlu", 0)])
    results = make_study(out, spec)
    monkeypatch.setattr("sftlab.commands.report._load_results", lambda s, smoke: results)
    return path


def test_report_command_writes_html_and_json_summary(study, tmp_path, capsys):
    assert main(["report", str(study), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    report = tmp_path / "runs" / "tiny-report" / "report"
    assert summary["index"] == str(report / "index.html") and (report / "index.html").is_file()
    present = {s["key"]: s["present"] for s in summary["sections"]}
    assert len(present) == 15  # ten analyses, synth funnel, sampling, RL, evaluation configs, examples
    assert present["deltas"] and present["lora-vs-full"] and present["categories"]
    assert not present["synth"] and not present["rl"]  # no synthetic source, no RL run
    assert not present["sampling"]  # one sample per item
    assert not present["leave-one-out"] and not present["sizes"]  # the grid has neither
    assert summary["n_models"] == 2 and summary["n_runs"] == 12
    assert {Path(p).suffix for p in summary["figures"]} == {".png", ".svg"}
    assert {Path(p).suffix for p in summary["tables"]} == {".csv", ".md"}
    page = (report / "index.html").read_text()
    assert "Reasoning" in page and "100 resamples, seed 7" in page  # the study's settings
    corr = (report / "tables" / "families_correlation.csv").read_text().splitlines()
    assert corr[1].startswith("olmo,qwen-tiny,")  # models[].family labels the family


def test_report_command_filters_and_markdown(study, tmp_path, capsys):
    out = tmp_path / "md-report"
    code = main(["report", str(study), "--out", str(out), "--format", "md", "--model", "qwen-tiny",
                 "--method", "full", "--epoch", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "not shown: Leave-one-out vs all" in printed
    text = (out / "index.md").read_text()
    assert "Selection: models: qwen-tiny, methods: full, sizes: all; epoch 1." in text
    assert "olmo-tiny" not in text
    assert sorted(p.name for p in (out / "tables").glob("deltas_*.md")) == ["deltas_qwen-tiny_full_1000.md"]


@pytest.mark.parametrize("args, message", [
    (["--epoch", "last"], "--epoch: expected 'final' or a number"),
    (["--epoch", "9"], "no results at epoch 9"),
    (["--model", "llama-huge"], "--model: no results for llama-huge"),
    (["--format", "pdf"], "--format: unknown format 'pdf'"),
])
def test_report_command_user_errors(study, tmp_path, capsys, args, message):
    assert main(["report", str(study), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny-report" / "report").exists()
