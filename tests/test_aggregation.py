"""The per-response weights of each GRPO loss type, measured by autograd through TRL's
``GRPOTrainer._compute_loss``, equal their closed forms (uneven lengths, accumulation)."""

from __future__ import annotations

import pytest
import torch

from sftlab.methods.aggregation import AGGREGATIONS, closed_form, measured_weights

MAX_LEN = 8


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_llama):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    path = str(tiny_llama)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("agg")), per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=MAX_LEN, use_cpu=True,
                      report_to="none")
    return GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path),
                       reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                       args=args, train_dataset=Dataset.from_list([{"prompt": "a"}] * 4),
                       processing_class=AutoTokenizer.from_pretrained(path))


def _masks(lengths: list[list[int]]) -> list[torch.Tensor]:
    return [torch.tensor([[1] * n + [0] * (MAX_LEN - n) for n in micro]) for micro in lengths]


@pytest.mark.parametrize("loss_type", AGGREGATIONS)
@pytest.mark.parametrize("lengths", [[[3, 8, 1, 5]], [[2, 7], [8, 1], [4, 4]], [[1, 1], [8, 6]]],
                         ids=["one-micro-batch", "accumulation-3", "uneven-micro-batches"])
def test_measured_weights_equal_the_closed_form(trainer, loss_type, lengths):
    trainer.args.steps_per_generation = len(lengths)  # one generation batch per optimizer step
    measured = measured_weights(trainer, _masks(lengths), loss_type)
    expected = closed_form(lengths, loss_type, MAX_LEN)
    flat = [m for micro in measured for m in micro]
    assert flat == pytest.approx([m for micro in expected for m in micro], rel=1e-6)
    assert trainer.loss_type == "dapo" and trainer._metrics["train"] == {}  # trainer restored


def test_the_weightings_differ_as_the_issue_describes():
    lengths = [[2, 6], [4, 4]]
    grpo, dapo = (closed_form(lengths, t, MAX_LEN) for t in ("grpo", "dapo"))
    mean = 4
    for micro_g, micro_d, micro_l in zip(grpo, dapo, lengths, strict=True):
        for g, d, n in zip(micro_g, micro_d, micro_l, strict=True):
            assert d / g == pytest.approx(n / mean)  # DAPO weighs a response by L_i / mean L
    # bnpo normalises by the micro-batch's tokens, not the step's: 2 and 6 share 8 tokens
    assert closed_form(lengths, "bnpo", MAX_LEN)[0] == pytest.approx([2 / 16, 6 / 16])
    # grpo averages over the micro-batch: a micro-batch of 1 response weighs it twice as much
    assert closed_form([[3], [5, 7]], "grpo", MAX_LEN) == [[1 / 2], [1 / 4, 1 / 4]]
