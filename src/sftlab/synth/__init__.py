"""sftlab.synth: synthetic training data (``sftlab synth``, study datasets ``format: synth``).

A grid of conditions, a generator model behind an OpenAI-compatible API writing a
problem, its reasoning and its answer per request, then filters, each counted per
condition in a funnel: an LLM judge, re-solving checked with Math-Verify, exact and
near-duplicate removal, decontamination against evaluation sets.

``spec``             the spec (YAML), validated with key paths; :func:`spec_identity`
``prompts``          the generator, judge and re-solver requests; parsing their answers
``near_duplicates``  exact + MinHash LSH dedupe (``datasketch``)
``contamination``    word n-gram overlap with evaluation files
``pipeline``         ``run_synth(spec, out) -> SynthResult``: the stages, the funnel, the files
``study``            a study's ``format: synth`` dataset: content-addressed generation

Import the submodules directly; this package imports nothing heavy.
"""
