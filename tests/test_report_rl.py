"""The report's RL section: m_i / m_i^GRPO by L_i / mean L, and length and reward by step."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sftlab.methods.aggregation import closed_form
from sftlab.report.rl_weights import rl_section


def test_the_rl_section_bins_measured_weights_by_relative_length(tmp_path):
    run = tmp_path / "ckpt" / "abc123"
    run.mkdir(parents=True)
    lines = []
    for step, lengths in ((1, [1, 2, 5, 8]), (2, [4, 4, 4, 4])):
        weights = {t: closed_form([lengths], t, 8)[0] for t in ("grpo", "bnpo", "dr_grpo", "dapo")}
        for i, n in enumerate(lengths):
            lines.append(json.dumps({"step": step, "prompt": i // 2, "response": i % 2,
                                     "length": n, "reward": float(i % 2), "advantage": 0.0,
                                     "weight": weights["dapo"][i],
                                     "weights": {t: w[i] for t, w in weights.items()}}))
    (run / "rl_log.jsonl").write_text("\n".join(lines) + "\n{cut by a kill")
    sec = rl_section(SimpleNamespace(options=SimpleNamespace(predictions_root=tmp_path)))
    assert not sec.absent
    weights, steps = (t.export for t in sec.tables)
    assert weights["responses"].sum() == 8
    for _, row in weights.iterrows():  # DAPO over GRPO is L_i / mean L; GRPO over itself is 1
        assert row["dapo"] == pytest.approx(row["mean_relative_length"])
        assert row["grpo"] == pytest.approx(1.0)
    assert steps.to_dict("list") == {"step": [1, 2], "responses": [4, 4],
                                     "mean_length": [4.0, 4.0], "mean_reward": [0.5, 0.5]}


def test_without_rl_runs_the_section_says_why(tmp_path):
    sec = rl_section(SimpleNamespace(options=SimpleNamespace(predictions_root=tmp_path)))
    assert sec.absent.startswith("No RL run")
