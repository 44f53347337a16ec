"""The ``vllm`` backend (optional extra, GPU): generation and prompt log-probabilities.

One engine serves a base model; LoRA checkpoints of that base model are served by
the same engine through ``LoRARequest`` (``set_adapter``), so many adapters are
evaluated without reloading the base weights. vLLM is imported lazily.

Log-likelihoods use ``prompt_logprobs=1`` on ``context + continuation`` token ids
(tokenised lm-evaluation-harness style, as the hf backend does) with
``max_tokens=1``; greedy-ness is read from the top-1 prompt log-probabilities.
"""

from __future__ import annotations

from typing import Any

from sftlab.errors import UserError
from sftlab.evaluate.backends.base import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from sftlab.models.generation import cut_at_stop
from sftlab.models.runtime import resolve_model_and_adapter
from sftlab.models.sources import resolve_model_source


class VLLMBackend:
    """A vLLM ``LLM`` engine, optionally with LoRA adapters of its base model."""

    name = "vllm"

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str | None = None,
                 max_lora_rank: int = 64, max_loras: int = 4, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, trust_remote_code: bool = False,
                 add_special_tokens: bool = True) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise UserError("the vllm backend needs vLLM: pip install 'sftlab[vllm]'") from err
        model, adapter = resolve_model_and_adapter(model, adapter)
        self.model_path, self.dtype = model, dtype or "bfloat16"
        model = resolve_model_source(model)
        self.add_special_tokens = add_special_tokens
        self.llm = LLM(model=model, dtype=self.dtype, enable_lora=True, max_lora_rank=max_lora_rank,
                       max_loras=max_loras, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, trust_remote_code=trust_remote_code,
                       enable_prefix_caching=True)
        self.tokenizer = self.llm.get_tokenizer()
        self._adapters: dict[str, int] = {}
        self.lora: Any = None
        self.set_adapter(adapter)

    def set_adapter(self, adapter: str | None) -> None:
        """Serve ``adapter`` (a PEFT LoRA folder of this base model) from now on; None = base."""
        if adapter is None:
            self.lora = None
            return
        from vllm.lora.request import LoRARequest

        lora_id = self._adapters.setdefault(adapter, len(self._adapters) + 1)
        self.lora = LoRARequest(f"adapter-{lora_id}", lora_id, adapter)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            bos = self.tokenizer.bos_token_id
            ctx = [bos if bos is not None else self.tokenizer.eos_token_id]
            return ctx, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ctx = self._encode(context)
        return ctx, self._encode(context + continuation)[len(ctx):]

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        from vllm import SamplingParams, TokensPrompt

        pairs = [self._pair(r.context, r.continuation) for r in requests]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        prompts = [TokensPrompt(prompt_token_ids=c + k) for c, k in pairs]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        results = []
        for (ctx, cont), out in zip(pairs, outs, strict=True):
            total, greedy = 0.0, True
            for pos in range(len(ctx), len(ctx) + len(cont)):
                entry = out.prompt_logprobs[pos]
                tok = out.prompt_token_ids[pos]
                total += entry[tok].logprob
                greedy = greedy and entry[tok].rank == 1
            results.append(LoglikelihoodResult(total, greedy, len(cont)))
        return results

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=self._encode(r.prompt)) for r in requests]
        params = [SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p,
                                 seed=r.seed if r.n > 1 or r.temperature > 0 else None,
                                 max_tokens=r.max_new_tokens, stop=list(r.stop) or None)
                  for r in requests]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [GenerateResult([cut_at_stop(o.text, r.stop) for o in out.outputs],
                               len(out.prompt_token_ids), [len(o.token_ids) for o in out.outputs])
                for r, out in zip(requests, outs, strict=True)]

    def provenance(self) -> dict[str, Any]:
        import vllm

        return {"backend": self.name, "model": self.model_path, "dtype": self.dtype,
                "adapter": self.lora.lora_path if self.lora else None,
                "versions": {"vllm": vllm.__version__}}
