"""Every score of a study as one flat table, read from its store.

Columns (:data:`TABLE_COLUMNS`, what ``sftlab results`` prints): ``run_id, model,
method, setting, datasets, size, epoch, task, shots, format, metric, value, stderr,
n``; :data:`COLUMNS` (the DataFrame of :func:`load_results`, and ``sftlab results
--paths``) adds ``eval_id, predictions_path``. ``epoch`` 0 is the
base model (``run_id`` ``base-<model>``, method and setting ``base``, datasets
empty, size 0); ``datasets`` joins a run's dataset names with ``+``; ``value`` is
in percent (MT-Bench: 1-10). Only evaluations of the study as currently planned
are listed.
"""

from __future__ import annotations

from pathlib import Path

from sftlab.store import RESULT_COLUMNS, STORE_NAME, Store

COLUMNS = RESULT_COLUMNS
TABLE_COLUMNS = RESULT_COLUMNS[:RESULT_COLUMNS.index("n") + 1]


def study_store_path(study, *, smoke: bool = False) -> Path:
    """The store file of ``study`` (of its smoke variant with ``smoke``)."""
    out = Path(study.out_dir)
    return (out / "smoke" if smoke else out) / STORE_NAME


def results_rows(study, *, smoke: bool = False, sampled: bool = False) -> list[dict]:
    """The results as a list of dicts (raises UserError when the study never ran); with
    ``sampled``, each sampled evaluation's pass@K / cons@K / maj@K as rows of their own."""
    store = Store.read(study_store_path(study, smoke=smoke))
    try:
        return store.results(sampled=sampled)
    finally:
        store.close()


def load_results(study, *, smoke: bool = False):
    """The results as a pandas DataFrame with :data:`COLUMNS` (possibly empty)."""
    import pandas as pd

    return pd.DataFrame(results_rows(study, smoke=smoke), columns=list(COLUMNS))
