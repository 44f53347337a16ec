"""`sftlab run` with the vLLM backend: every LoRA checkpoint of a base model is evaluated
through one engine with adapters. On CPU the engine is a stand-in with vLLM's backend
interface (one base model, ``set_adapter`` per checkpoint) that answers with the hf
backend; the real engine is tested on a GPU (``-m gpu``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sftlab.orchestrate import HANDLERS, run_study
from sftlab.store import Store
from sftlab.study.plan import plan
from sftlab.study.spec import load_study

HERE = Path(__file__).resolve()
LOG_ENV = "SFTLAB_TEST_ENGINE_LOG"


class StandInEngine:
    """vLLM's backend interface over the hf backend; every call is logged."""

    name = "vllm"

    def __init__(self, model: str, **_: object) -> None:
        self.model, self.adapter, self._hf = model, None, None
        self._log({"event": "engine", "model": model, "pid": os.getpid()})

    def _log(self, record: dict) -> None:
        with open(os.environ[LOG_ENV], "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def set_adapter(self, adapter: str | None) -> None:
        self.adapter, self._hf = adapter, None
        self._log({"event": "adapter", "adapter": adapter, "pid": os.getpid()})

    def _backend(self):
        from sftlab.evaluate.backends.hf import HFBackend

        if self._hf is None:
            self._hf = HFBackend(self.model, adapter=self.adapter, device="cpu",
                                 pair_split="separate")
        return self._hf

    def loglikelihood(self, requests):
        return self._backend().loglikelihood(requests)

    def generate(self, requests):
        return self._backend().generate(requests)

    def provenance(self) -> dict:
        return {"backend": "vllm-stand-in", "model": self.model, "adapter": self.adapter}


def stand_in_evaluate(payload: dict) -> dict:
    """The real evaluate handler, with the vllm backend replaced by the stand-in."""
    from sftlab.evaluate import runner
    from sftlab.execute.handlers import evaluate_job

    real = runner.make_backend

    def make_backend(backend, model, **kwargs):
        if backend == "vllm":
            engine = StandInEngine(model)
            engine.set_adapter(kwargs.get("adapter"))
            return engine
        return real(backend, model, **kwargs)

    runner.make_backend = make_backend
    try:
        return evaluate_job(payload)
    finally:
        runner.make_backend = real


STUDY = """
name: vllm-adapters
seed: 1
output_dir: {out}
template: "Q: {{instruction}}\\nA: {{response}}"
max_length: 64
models: [{{name: tiny, path: "tiny:llama"}}]
datasets: [{{name: alpaca, format: alpaca, path: "embedded:alpaca_data.json"}}]
grid: {{sizes: [16], methods: [lora, full], settings: [single]}}
methods:
  lora: {{learning_rate: 1.0e-3, batch_size: 8, epochs: 2,
          lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear}}}}
  full: {{learning_rate: 1.0e-3, batch_size: 8, epochs: 1}}
evaluation:
  backend: vllm
  benchmarks:
    - {{task: boolq, shots: [0], limit: 4, data: "embedded:"}}
    - {{task: nq_open, shots: [0], limit: 3, max_new_tokens: 4, data: "embedded:"}}
"""


@pytest.mark.slow
def test_run_evaluates_all_lora_checkpoints_through_one_engine(tmp_path, monkeypatch):
    log = tmp_path / "engine.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    study_file = tmp_path / "study.yaml"
    study_file.write_text(STUDY.format(out=tmp_path / "out"))
    study = load_study(study_file)
    handlers = {**HANDLERS, "evaluate": f"{HERE}:stand_in_evaluate"}
    summary = run_study(study, handlers=handlers, progress=False)
    assert summary["failed"] == 0

    the_plan = plan(study)
    lora = next(r for r in the_plan.runs if r.method == "lora")
    ckpts = {str(Path(study.out_dir) / "ckpt" / lora.id / f"epoch-{e}") for e in (1, 2)}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    # one engine for both LoRA checkpoints, each a set_adapter on it (after the base call)
    by_engine: list[list[dict]] = []
    for ev in events:
        if ev["event"] == "engine":
            by_engine.append([])
        by_engine[-1].append(ev)
    adapter_engines = [evs for evs in by_engine
                       if {e["adapter"] for e in evs if e["event"] == "adapter"} & ckpts]
    assert len(adapter_engines) == 1
    served = [e["adapter"] for e in adapter_engines[0] if e["event"] == "adapter" and e["adapter"]]
    assert set(served) == ckpts and len(served) == 2
    # the base model and the full checkpoint: an engine each (3 engines in all)
    assert len(by_engine) == 3

    store = Store.read(Path(study.out_dir) / "store.sqlite")
    done = store.results()
    store.close()
    assert len(done) == len(the_plan.evaluations) == 2 * (1 + 2 + 1)
    assert all(r["value"] == r["value"] for r in done)  # numbers, no NaN
