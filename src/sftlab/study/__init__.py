"""The study: its typed spec, its template and its expansion into runs."""

from sftlab.study.plan import EvalSpec, Plan, RunSpec, TrainingSetSpec, content_hash, plan
from sftlab.study.spec import (
    BenchmarkSpec,
    DatasetSpec,
    MethodBase,
    ModelSpec,
    Study,
    load_study,
    study_from_dict,
)
from sftlab.study.template import render_example, render_prompt, split_template

__all__ = [
    "BenchmarkSpec", "DatasetSpec", "EvalSpec", "MethodBase", "ModelSpec", "Plan", "RunSpec",
    "Study", "TrainingSetSpec", "content_hash", "load_study", "plan", "render_example",
    "render_prompt", "split_template", "study_from_dict",
]
