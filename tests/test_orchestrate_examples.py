"""The shipped quickstart study loads, validates and plans as the issue describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftlab.study import load_study, plan
from sftlab.study.resolve import EMBEDDED_PREFIX, TINY_PREFIX

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"


def test_quickstart_has_the_promised_shape():
    study = load_study(QUICKSTART)
    assert sorted(m.path for m in study.models) == [TINY_PREFIX + "llama", TINY_PREFIX + "qwen2"]
    assert len(study.datasets) == 3
    assert all(d.path.startswith(EMBEDDED_PREFIX) for d in study.datasets)
    assert len(study.grid.sizes) == 2
    assert sorted(study.method_type(m) for m in study.grid.methods) == ["full", "lora"]
    assert sorted(study.grid.settings) == ["all", "leave_one_out", "single"]
    assert all(study.methods[m].epochs == 2 for m in study.grid.methods)
    benches = study.evaluation.benchmarks
    assert len({b.task for b in benches}) >= 4
    assert all(b.limit and b.data and b.data.startswith(EMBEDDED_PREFIX) for b in benches)
    # the benchmark that shows learning: NQ-open on the facts the alpaca source teaches
    [nq] = [b for b in benches if b.task == "nq_open"]
    assert nq.limit >= 50 and nq.max_new_tokens
    alpaca = [d for d in study.datasets if d.path == EMBEDDED_PREFIX + "alpaca_data.json"]
    assert len(alpaca) == 1 and max(study.grid.sizes) >= 400  # ~100 steps: see the yaml
    counts = plan(study).counts()
    assert counts["runs"] == 2 * 2 * 2 * (3 + 1 + 3)
    assert counts["base_models"] == 2


COMPETITION = QUICKSTART.with_name("competition.yaml")


def test_competition_pipeline_is_one_chain_per_model():
    study = load_study(COMPETITION)
    p = plan(study)
    assert sorted(r.chain for r in p.runs) == [
        "cpt", "cpt>sft_no_upscale", "cpt>upscale", "cpt>upscale>sft", "cpt>upscale>sft>rl_dapo",
        "cpt>upscale>sft>rl_grpo"]
    cpt = study.methods["cpt"]
    assert (cpt.type, cpt.weights, cpt.max_length, cpt.rope.type) == ("cpt", "dora", 16384, "yarn")
    assert (study.methods["upscale"].strategy, study.methods["upscale"].layers) == ("opt_deus", 48)
    runs = {r.method: r for r in p.runs}
    assert runs["sft"].parent == runs["upscale"].id and runs["upscale"].parent == runs["cpt"].id
    assert runs["sft_no_upscale"].parent == runs["cpt"].id
    assert runs["rl_grpo"].parent == runs["rl_dapo"].parent == runs["sft"].id
    assert (study.methods["rl_grpo"].loss_type, study.methods["rl_dapo"].loss_type) == ("grpo",
                                                                                        "dapo")
    assert (runs["rl_grpo"].unit, runs["rl_grpo"].checkpoints) == ("step", (100, 200))


@pytest.mark.slow
def test_competition_runs_in_smoke_mode_and_reports_every_link(tmp_path, capsys):
    import json

    import yaml

    from sftlab.cli import main

    raw = yaml.safe_load(COMPETITION.read_text())
    raw["methods"]["cpt"]["data"]["path"] = str(COMPETITION.parent / "data" / "math_text.jsonl")
    [synth] = [d for d in raw["datasets"] if d["format"] == "synth"]
    synth["path"] = str(COMPETITION.parent / synth["path"])
    study = tmp_path / "competition.yaml"
    study.write_text(yaml.safe_dump({**raw, "output_dir": str(tmp_path / "out")}))
    assert main(["run", str(study), "--smoke", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == 0 and summary["stages"]["train"]["done"] == 6
    assert main(["results", str(study), "--smoke", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"base", "cpt", "cpt>upscale", "cpt>upscale>sft",
                                           "cpt>sft_no_upscale", "cpt>upscale>sft>rl_grpo",
                                           "cpt>upscale>sft>rl_dapo"}
    sampled = {r["method"] for r in rows if r["metric"].startswith("cons@")}
    assert sampled == {"cpt>upscale>sft>rl_grpo", "cpt>upscale>sft>rl_dapo"}  # the last links
    assert {r["metric"] for r in rows if r["method"] in sampled} >= {"cons@1", "cons@4", "pass@4"}
    assert main(["report", str(study), "--smoke"]) == 0
