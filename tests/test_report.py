"""Unit tests of the report: each table against hand-computed values on a tiny store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sftlab.errors import UserError
from sftlab.report import ReportOptions, build_report, tables
from sftlab.report.items import ItemScores
from sftlab.report.stats import bootstrap_counts, cluster_order, kendall_tau, paired_bootstrap
from sftlab.report.view import build_view

OPTS = ReportOptions(resamples=400, seed=3)


def row(run: str, model: str, method: str, setting: str, datasets: str, size: int, epoch: int,
        task: str, shots: int, value: float, path: str = "", n: int = 4) -> dict:
    return {"run_id": run, "model": model, "method": method, "setting": setting,
            "datasets": datasets, "size": size, "epoch": epoch, "task": task, "shots": shots,
            "format": "opencompass", "metric": "accuracy", "value": value, "stderr": 1.0, "n": n,
            "eval_id": f"{run}-{epoch}-{task}-{shots}", "predictions_path": path}


def base(model: str, task: str, shots: int, value: float, path: str = "") -> dict:
    return row(f"base-{model}", model, "base", "base", "", 0, 0, task, shots, value, path)


def preds(folder: Path, name: str, scores: list, outputs: list | None = None) -> str:
    path = folder / f"{name}.jsonl"
    with path.open("w") as out:
        for i, s in enumerate(scores):
            out.write(json.dumps({"item_id": f"q{i}", "score": s, "prompt_hash": "h",
                                  "output": (outputs or [""] * len(scores))[i], "extracted": "",
                                  "correct": None if s is None else s > 0, "outcome": "pass"}) + "\n")
    return str(path)


def view_of(rows: list[dict], options: ReportOptions = OPTS):
    return build_view(pd.DataFrame(rows), options)


# ---------------------------------------------------------------- statistics


def test_bootstrap_counts_draw_n_items_per_resample():
    counts = bootstrap_counts(7, 50, np.random.default_rng(0))
    assert counts.shape == (50, 7)
    assert (counts.sum(axis=1) == 7).all()


def test_paired_bootstrap_constant_interval_missing_items_and_seed():
    diffs = np.array([[0.5] * 10, [1, -1] * 5, [1.0, np.nan, 1.0, np.nan, 0.0, 0.0, np.nan, 1, 1, 1]])
    low, high, n = paired_bootstrap(diffs, resamples=500, rng=1)
    assert low[0] == pytest.approx(0.5) and high[0] == pytest.approx(0.5)
    assert low[1] < 0 < high[1]
    assert list(n) == [10, 10, 7]
    assert 0 <= low[2] <= 5 / 7 <= high[2] <= 1  # only the 7 present items are resampled
    again = paired_bootstrap(diffs, resamples=500, rng=1)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])


def test_paired_bootstrap_matches_normal_approximation():
    diffs = np.array([[1.0] * 10 + [0.0] * 10])  # mean 0.5, se = 0.513 / sqrt(20)
    low, high, _ = paired_bootstrap(diffs, resamples=4000, rng=0)
    se = np.std(diffs, ddof=1) / math.sqrt(20)
    assert low[0] == pytest.approx(0.5 - 1.96 * se, abs=0.05)
    assert high[0] == pytest.approx(0.5 + 1.96 * se, abs=0.05)


def test_kendall_tau_and_cluster_order():
    tau, _, n = kendall_tau([1, 2, 3, np.nan], [1, 3, 2, 5])
    assert tau == pytest.approx(1 / 3) and n == 3
    assert math.isnan(kendall_tau([1, 2], [2, 1])[0])
    r = pd.DataFrame([[1, 0.9, -0.5], [0.9, 1, -0.4], [-0.5, -0.4, 1]], index=list("abc"), columns=list("abc"))
    order = cluster_order(r)
    assert abs(order.index("a") - order.index("b")) == 1


# ---------------------------------------------------------------- section tables


@pytest.fixture
def delta_rows(tmp_path):
    """Model A, gsm8k 0-shot on 20 items: base right on 5; d1 right on 15 (those 5 + 10);
    d2 gains 1 item and loses 1. Model B has no predictions (no intervals)."""
    base_s = [1] * 5 + [0] * 15
    d1_s = [1] * 15 + [0] * 5
    d2_s = [0] + [1] * 5 + [0] * 14
    return [
        base("A", "gsm8k", 0, 25.0, preds(tmp_path, "bA", base_s)),
        row("r1", "A", "full", "single", "d1", 1000, 1, "gsm8k", 0, 50.0, preds(tmp_path, "r1e1", [0] * 20)),
        row("r1", "A", "full", "single", "d1", 1000, 2, "gsm8k", 0, 75.0, preds(tmp_path, "r1", d1_s)),
        row("r2", "A", "full", "single", "d2", 1000, 2, "gsm8k", 0, 25.0, preds(tmp_path, "r2", d2_s)),
        row("r3", "A", "full", "single", "d3", 1000, 2, "gsm8k", 0, 30.0),
        base("B", "gsm8k", 0, 40.0),
        row("r4", "B", "full", "single", "d1", 1000, 2, "gsm8k", 0, 45.0),
    ]


def test_delta_table_values_marks_and_intervals(delta_rows):
    view = view_of(delta_rows)
    d = tables.delta_table(view, ItemScores(), OPTS).set_index("run_id")
    assert d.loc["r1", "epoch"] == 2  # final epoch by default
    assert d.loc["r1", "delta"] == 50.0 and d.loc["r2", "delta"] == 0.0 and d.loc["r3", "delta"] == 5.0
    assert d.loc["r4", "delta"] == 5.0
    assert d.loc["r1", "mark"] == "best" and d.loc["r2", "mark"] == "worst" and d.loc["r3", "mark"] == ""
    assert d.loc["r4", "mark"] == ""  # alone in its block: nothing to compare
    # r1 - base: +1 on 10 of 20 items -> interval around 50 points, excluding 0
    assert 20 < d.loc["r1", "low"] < 50 < d.loc["r1", "high"] < 80
    assert bool(d.loc["r1", "significant"]) and d.loc["r1", "items"] == 20
    # r2 - base: +1 and -1 on one item each -> interval contains 0
    assert d.loc["r2", "low"] < 0 < d.loc["r2", "high"] and not d.loc["r2", "significant"]
    assert math.isnan(d.loc["r3", "low"]) and not d.loc["r3", "significant"]


def test_epoch_table_starts_at_the_base_model(delta_rows):
    frame = tables.epoch_table(view_of(delta_rows))
    r1 = frame[frame["run_id"] == "r1"].set_index("epoch")["value"].to_dict()
    assert r1 == {0: 25.0, 1: 50.0, 2: 75.0}


def test_epoch_option_selects_that_epoch(delta_rows):
    view = view_of(delta_rows, ReportOptions(epoch=1))
    assert list(view.final["run_id"]) == ["r1"] and view.final["value"].iloc[0] == 50.0
    with pytest.raises(UserError, match="no results at epoch 7"):
        view_of(delta_rows, ReportOptions(epoch=7))


def _grid_rows() -> list[dict]:
    """Two models x two datasets + all + LOO, two sizes, full and lora, columns gsm8k and mmlu."""
    rows = []
    values = {  # (model, method, size, data) -> (gsm8k, mmlu)
        ("A", "full", 1000, "d1"): (60, 40), ("A", "full", 1000, "d2"): (50, 50),
        ("A", "full", 1000, "d3"): (45, 42),
        ("A", "lora", 1000, "d1"): (55, 35), ("A", "lora", 1000, "d2"): (45, 46),
        ("A", "full", 20000, "d1"): (70, 38), ("A", "full", 20000, "d2"): (52, 55),
        ("A", "full", 20000, "d3"): (50, 40),
        ("B", "full", 1000, "d1"): (30, 60), ("B", "full", 1000, "d2"): (20, 62),
    }
    for (m, method, size, data), (g, u) in values.items():
        run = f"{m}-{method}-{size}-{data}"
        for task, v in (("gsm8k", g), ("mmlu", u)):
            rows.append(row(run, m, method, "single", data, size, 1, task, 0, v))
    for m, g, u in (("A", 40, 40), ("B", 25, 50)):
        rows += [base(m, "gsm8k", 0, g), base(m, "mmlu", 0, u)]
    rows += [row("A-all", "A", "full", "all", "d1+d2+d3", 1000, 1, "gsm8k", 0, 58),
             row("A-all", "A", "full", "all", "d1+d2+d3", 1000, 1, "mmlu", 0, 48),
             row("A-loo1", "A", "full", "leave_one_out", "d2+d3", 1000, 1, "gsm8k", 0, 49),
             row("A-loo1", "A", "full", "leave_one_out", "d2+d3", 1000, 1, "mmlu", 0, 50)]
    return rows


def test_family_table_and_correlation():
    view = view_of(_grid_rows())
    deltas = tables.delta_table(view, ItemScores(), OPTS)
    fam = tables.family_table(deltas).set_index(["family", "method", "size", "column"])
    # A full 1000 gsm8k deltas vs base 40: d1 +20, d2 +10, d3 +5, all +18, loo +9 -> mean 12.4
    assert fam.loc[("A", "full", 1000, "gsm8k 0-shot"), "mean_delta"] == pytest.approx(12.4)
    assert fam.loc[("A", "full", 1000, "gsm8k 0-shot"), "runs"] == 5
    assert fam.loc[("B", "full", 1000, "mmlu 0-shot"), "mean_delta"] == pytest.approx(11.0)
    corr = tables.family_correlation(deltas).iloc[0]
    # paired on (full, 1000, d1|d2, gsm8k|mmlu): A = [20, 0, 10, 10], B = [5, 10, -5, 12]
    expected = np.corrcoef([20, 0, 10, 10], [5, 10, -5, 12])[0, 1]
    assert corr["n"] == 4 and corr["r"] == pytest.approx(expected)


def test_zscore_table():
    view = view_of(_grid_rows(), ReportOptions(models=("B",)))
    z = tables.zscore_table(view).set_index(["data", "column"])["mean_z"]
    # B gsm8k: d1 30, d2 20 -> mean 25, sd 7.07 -> z +0.707 / -0.707
    assert z[("d1", "gsm8k 0-shot")] == pytest.approx(1 / math.sqrt(2))
    assert z[("d2", "gsm8k 0-shot")] == pytest.approx(-1 / math.sqrt(2))


def test_benchmark_correlation_counts_models():
    view = view_of(_grid_rows(), ReportOptions(methods=("full",), sizes=(1000,)))
    r, n = tables.benchmark_correlation(view)
    runs = pd.concat([view.final, view.base]).pivot_table(index="run_id", columns="column", values="value")
    assert n.loc["gsm8k 0-shot", "mmlu 0-shot"] == len(runs) == 9
    assert r.loc["gsm8k 0-shot", "mmlu 0-shot"] == pytest.approx(
        np.corrcoef(runs["gsm8k 0-shot"], runs["mmlu 0-shot"])[0, 1])


def test_loo_table_difference_from_all():
    view = view_of(_grid_rows())
    loo = tables.loo_table(view, ItemScores(), OPTS).set_index("column")
    assert loo.loc["gsm8k 0-shot", "data"] == "all - d1"
    assert loo.loc["gsm8k 0-shot", "diff"] == -9 and loo.loc["mmlu 0-shot", "diff"] == 2


def test_shots_table():
    rows = [base("A", "gsm8k", 0, 10), base("A", "gsm8k", 4, 20),
            row("r1", "A", "full", "single", "d1", 1000, 1, "gsm8k", 0, 30),
            row("r1", "A", "full", "single", "d1", 1000, 1, "gsm8k", 4, 26),
            row("r2", "A", "full", "single", "d2", 1000, 1, "gsm8k", 0, 40),
            row("r2", "A", "full", "single", "d2", 1000, 1, "gsm8k", 4, 30),
            row("r1", "A", "full", "single", "d1", 1000, 1, "mmlu", 0, 50)]
    shots = tables.shots_table(view_of(rows)).set_index("shots")
    assert set(shots["task"]) == {"gsm8k"}  # mmlu has a single shot count
    assert shots.loc[0, "base"] == 10 and shots.loc[0, "sft_mean"] == 35 and shots.loc[0, "delta_mean"] == 25
    assert shots.loc[4, "sft_mean"] == 28 and shots.loc[4, "delta_mean"] == 8 and shots.loc[4, "runs"] == 2


def test_family_and_shots_mean_deltas_get_paired_intervals(tmp_path):
    """Base right on items 0-4; d1 on 0-14; d2 on 0-6. At 4 shots every model equals the base."""
    base_s, d1_s, d2_s = [1] * 5 + [0] * 15, [1] * 15 + [0] * 5, [1] * 7 + [0] * 13
    same = preds(tmp_path, "same", base_s)
    rows = [base("A", "gsm8k", 0, 25.0, preds(tmp_path, "b", base_s)), base("A", "gsm8k", 4, 25.0, same),
            row("r1", "A", "full", "single", "d1", 1000, 1, "gsm8k", 0, 75.0, preds(tmp_path, "r1", d1_s)),
            row("r2", "A", "full", "single", "d2", 1000, 1, "gsm8k", 0, 35.0, preds(tmp_path, "r2", d2_s)),
            row("r1", "A", "full", "single", "d1", 1000, 1, "gsm8k", 4, 25.0, same),
            row("r2", "A", "full", "single", "d2", 1000, 1, "gsm8k", 4, 25.0, same)]
    view, items = view_of(rows), ItemScores()
    deltas = tables.delta_table(view, items, OPTS)
    fam = tables.family_table(deltas, view, items, OPTS).set_index(["family", "column"])
    zero = fam.loc[("A", "gsm8k 0-shot")]
    # item-wise mean of d1 and d2 minus base: +1 on 2 items, +0.5 on 8, 0 on 10 -> +30 points
    assert zero["mean_delta"] == pytest.approx(30.0) and zero["runs"] == 2 and zero["items"] == 20
    assert 0 < zero["low"] < 30 < zero["high"] and bool(zero["significant"])
    four = fam.loc[("A", "gsm8k 4-shot")]
    assert four["low"] == four["high"] == 0.0 and not four["significant"]
    shots = tables.shots_table(view, items, OPTS).set_index("shots")
    assert shots.loc[0, "delta_mean"] == pytest.approx(30.0) and bool(shots.loc[0, "significant"])
    assert shots.loc[0, "low"] == pytest.approx(zero["low"]) and shots.loc[0, "high"] == pytest.approx(zero["high"])
    assert shots.loc[4, "delta_mean"] == 0.0 and not shots.loc[4, "significant"]
    build_report(pd.DataFrame(rows), tmp_path / "report", options=OPTS)
    fam_md = (tmp_path / "report" / "tables" / "families_full_1000.md").read_text()
    assert "+30.0* [" in fam_md and "2 runs" in fam_md
    assert "+30.0*" in (tmp_path / "report" / "tables" / "shots.md").read_text()


def test_lora_vs_full_differences_and_sign_agreement():
    view = view_of(_grid_rows())
    deltas = tables.delta_table(view, ItemScores(), OPTS)
    pairs = tables.lora_full_table(view, deltas, ItemScores(), OPTS).set_index(["data", "column"])
    assert pairs.loc[("d1", "gsm8k 0-shot"), "diff"] == -5
    assert pairs.loc[("d2", "mmlu 0-shot"), "diff"] == -4
    # deltas (full, lora): d1 gsm8k (+20, +15) same; d1 mmlu (0, -5) differ;
    # d2 gsm8k (+10, +5) same; d2 mmlu (+10, +6) same -> 3 of 4
    agree = tables.sign_agreement(pairs.reset_index()).set_index("model")
    assert agree.loc["A", "agree"] == pytest.approx(0.75) and agree.loc["all models", "n"] == 4


def test_size_table_and_kendall_tau():
    view = view_of(_grid_rows())
    deltas = tables.delta_table(view, ItemScores(), OPTS)
    sides, small, large = tables.size_table(deltas)
    assert (small, large) == (1000, 20000)
    g = sides[(sides["model"] == "A") & (sides["method"] == "full") & (sides["column"] == "gsm8k 0-shot")
              & (sides["setting"] == "single")].set_index("data")
    assert g.loc["d1", "delta_small"] == 20 and g.loc["d1", "delta_large"] == 30
    assert not g["significant_small"].any()  # no predictions files: no interval, no star
    from sftlab.report.sections import _starred

    assert _starred(2.0, np.True_) == "+2.0*" and _starred(2.0, np.False_) == "+2.0"
    assert _starred(float("nan"), np.nan) == "—"
    tau = tables.size_tau(sides).set_index(["model", "method", "column"])
    # mmlu deltas at 1000: d1 0, d2 10, d3 2; at 20000: d1 -2, d2 15, d3 0 -> same ranking
    assert tau.loc[("A", "full", "mmlu 0-shot"), "tau"] == pytest.approx(1.0)
    assert tau.loc[("A", "full", "mmlu 0-shot"), "n"] == 3


def test_category_table_scales_mt_bench_and_needs_every_column():
    rows = [base("A", "gsm8k", 0, 20), base("A", "math", 0, 10), base("A", "mt_bench", 0, 5.0),
            row("r1", "A", "full", "single", "d1", 1000, 1, "gsm8k", 0, 40),
            row("r1", "A", "full", "single", "d1", 1000, 1, "math", 0, 30),
            row("r1", "A", "full", "single", "d1", 1000, 1, "mt_bench", 0, 6.5),
            row("r2", "A", "full", "single", "d2", 1000, 1, "gsm8k", 0, 50)]
    frame, used = tables.category_table(view_of(rows), {"Math": ["math", "gsm8k"], "Subjective": ["mt_bench"],
                                                        "Coding": ["mbpp"]})
    assert used == ["Math", "Subjective"]
    frame = frame.set_index("data")
    assert frame.loc["d1", "Math"] == 35 and frame.loc["d1", "Subjective"] == 65
    assert frame.loc["d1", "Average"] == 50 and frame.loc["(base)", "Average"] == 32.5
    assert math.isnan(frame.loc["d2", "Math"]) and math.isnan(frame.loc["d2", "Average"])


# ---------------------------------------------------------------- the written report


def test_build_report_html_sections_missing_and_escaping(tmp_path, delta_rows):
    rows = [dict(r) for r in delta_rows]
    evil = "<script>document.title='pwned'</script>"
    for r in rows:
        if r["model"] == "B":
            r["model"] = f"B{evil}"
        if r["run_id"] == "r3":
            r["datasets"] = "d3<img src=x onerror=alert(1)>"
    rows[2]["predictions_path"] = preds(tmp_path, "r1x", [1] * 15 + [0] * 5, [evil] * 20)
    rows.append(row("r1", "A", "full", "single", "d1", 1000, 2, "mmlu", 0, 30.0))  # no base, no r2
    summary = build_report(pd.DataFrame(rows), tmp_path / "report", options=OPTS)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page  # name and output shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    present = {s.key: s.present for s in summary.sections}
    assert present["deltas"] and present["epochs"] and not present["leave-one-out"]
    assert "Not shown: No leave-one-out runs in the selection." in page
    assert "+50.0*" in page  # significant delta marked
    assert 'class="missing"' in page and "—" in page  # mmlu: no base score, no r2 score
    assert "have no base-model score" in page
    assert (tmp_path / "report" / "tables" / "deltas_A_full_1000.csv").is_file()
    csv = pd.read_csv(tmp_path / "report" / "tables" / "deltas_A_full_1000.csv")
    assert csv.set_index(["run_id", "column"]).loc[("r1", "gsm8k 0-shot"), "delta"] == 50.0
    assert any(p.suffix == ".svg" for p in summary.figures) and any(p.suffix == ".png" for p in summary.figures)
    assert not list(tmp_path.glob(".report.*"))  # no temp folders left


def test_build_report_markdown_escapes(tmp_path, delta_rows):
    rows = [dict(r, model="A|<b>x</b>") if r["model"] == "A" else r for r in delta_rows]
    build_report(pd.DataFrame(rows), tmp_path / "md", options=ReportOptions(format="md", resamples=50))
    text = (tmp_path / "md" / "index.md").read_text()
    assert "## 1. Deltas vs the base model" in text and "## 10. Category scores" in text
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert not (tmp_path / "md" / "index.html").exists()


def test_bad_filter_is_a_user_error_and_writes_nothing(tmp_path, delta_rows):
    out = tmp_path / "out" / "report"
    with pytest.raises(UserError, match=r"--model: no results for Z \(known: A, B\)"):
        build_report(pd.DataFrame(delta_rows), out, options=ReportOptions(models=("Z",)))
    with pytest.raises(UserError, match="no results yet"):
        build_report(pd.DataFrame(columns=list(delta_rows[0])), out)
    with pytest.raises(UserError, match="lack column"):
        build_report(pd.DataFrame([{"model": "A"}]), out)
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_folder_that_is_not_a_report(tmp_path, delta_rows):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a report folder"):
        build_report(pd.DataFrame(delta_rows), target, options=OPTS)
    assert (target / "notes.txt").read_text() == "keep me"


def test_configs_section_shows_config_template_mode_and_version(tmp_path, delta_rows):
    for name, config in (("bA", "gsm8k_0shot_gen_a58960"), ("r1", "gsm8k_0shot_gen_a58960")):
        (tmp_path / f"{name}.provenance.json").write_text(json.dumps(
            {"config": config, "template_mode": "rounds" if name == "r1" else None,
             "version": "2"}))
    summary = build_report(pd.DataFrame(delta_rows), tmp_path / "report", options=OPTS)
    assert {s.key: s.present for s in summary.sections}["configs"]
    table = pd.read_csv(tmp_path / "report" / "tables" / "configs.csv")
    row = table.set_index("column").loc["gsm8k 0-shot"]
    assert (row["config"], row["template_mode"], row["version"]) == (
        "gsm8k_0shot_gen_a58960", "rounds", 2)
