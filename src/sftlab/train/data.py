"""Prepared rows -> token ids with the prompt masked out of the loss.

Each example is ``tokens(prompt) + tokens(completion) + [EOS]``, tokenised in two
parts rather than as one string. That is how the model will be used: an
evaluator renders the same prompt, tokenises it, and the model continues with
the response. Tokenising the joined text instead lets BPE merge across the
boundary (``"###Answer: "`` + ``"def"`` -> ``"###Answer:"`` + ``" def"``), so the
model would be trained on a prompt it never sees at inference.

The result is a pre-tokenised dataset (``input_ids`` + ``completion_mask``) that
TRL's ``SFTTrainer`` turns into labels (``completion_only_loss``), truncates to
``max_length`` and drops when nothing is left to learn from.
"""

from __future__ import annotations


def tokenize_rows(rows: list[dict], tokenizer) -> dict[str, list[list[int]]]:
    """Columns ``input_ids`` and ``completion_mask`` for prompt/completion ``rows``."""
    prompts = tokenizer([r["prompt"] for r in rows])["input_ids"]
    completions = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    appends_eos = tokenizer("")["input_ids"][-1:] == [eos]  # e.g. add_eos_token=True
    input_ids, masks = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        if appends_eos and prompt[-1:] == [eos]:
            prompt = prompt[:-1]
        if completion and completion[-1] == eos:
            completion = completion[:-1]
        input_ids.append(prompt + completion + [eos])
        masks.append([0] * len(prompt) + [1] * (len(completion) + 1))
    return {"input_ids": input_ids, "completion_mask": masks}


def to_dataset(rows: list[dict], tokenizer):
    """A ``datasets.Dataset`` of tokenised, prompt-masked examples; raw text rows
    (``{"text": ...}``, continued pretraining) stay text for TRL to tokenise and pack."""
    from datasets import Dataset

    if rows and "prompt" not in rows[0]:
        return Dataset.from_dict({"text": [r["text"] for r in rows]})
    return Dataset.from_dict(tokenize_rows(rows, tokenizer))
