"""Hostile and careless input: study files, templates, report folders, Markdown, JSON,
score files, duplicate methods, damaged or unwritable files. Each must give a clear
error (exit 2, naming the file) or an honest result, never a traceback or a silent one."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sftlab.cli import main
from sftlab.errors import UserError
from sftlab.study import load_study, plan, study_from_dict

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart.yaml"


def small_study(tmp_path: Path, **changes) -> dict:
    raw = {
        "name": "hostile", "output_dir": str(tmp_path / "out"),
        "models": [{"name": "m", "path": "tiny:llama"}],
        "datasets": [{"name": "a", "format": "alpaca", "path": "embedded:alpaca_data.json"}],
        "grid": {"sizes": [8], "methods": ["full"], "settings": ["single"]},
        "methods": {"full": {"learning_rate": 1e-4, "batch_size": 4, "epochs": 1}},
        "evaluation": {"benchmarks": [{"task": "gsm8k", "shots": [0], "limit": 2}]},
    }
    raw.update(changes)
    return raw


def write_study(tmp_path: Path, raw: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------- study files


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path, capsys):
    bomb = ['name: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):  # 9**12 leaves if expanded
        bomb.append(f"l{i}: &{chr(97 + i)} [*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},"
                    f"*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},"
                    f"*{chr(96 + i)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb) + "\n")
    assert len(path.read_bytes()) < 1200
    start = time.perf_counter()
    code = main(["plan", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - start < 5
    assert "alias" in err and f"{path}:2" in err


def test_a_plain_alias_is_refused_too(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(EXAMPLE.read_text() + "\nextra: &x 1\nother: *x\n")
    with pytest.raises(UserError, match="alias"):
        load_study(path)


def test_non_utf8_and_deeply_nested_study_files_are_user_errors(tmp_path, capsys):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["plan", str(latin)]) == 2
    assert "UTF-8" in capsys.readouterr().err
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["plan", str(deep)]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and str(deep) in err


@pytest.mark.parametrize("template", ["###Q: {instruction:.2}\n###A: {response}",
                                      "###Q: {instruction:>999999999}\n###A: {response}",
                                      "###Q: {instruction!r}\n###A: {response}"])
def test_template_format_specs_are_refused(tmp_path, template):
    with pytest.raises(UserError, match="only plain placeholders"):
        study_from_dict(small_study(tmp_path, template=template))


def test_dataset_field_format_specs_are_refused(tmp_path):
    from sftlab.data.loaders import compile_fields
    from sftlab.study.spec import FieldMap

    with pytest.raises(UserError, match="only plain placeholders"):
        compile_fields(FieldMap(instruction="{question:.3}", response="answer"), where="d")
    pick = compile_fields(FieldMap(instruction="Q: {question}", response="answer"), where="d")
    assert pick({"question": "why?", "answer": "because"}) == ("Q: why?", "because")


def test_identical_methods_are_an_error_at_plan_time(tmp_path, capsys):
    raw = small_study(tmp_path)
    raw["methods"]["copy"] = dict(raw["methods"]["full"], type="full", micro_batch_size=2)
    raw["grid"]["methods"] = ["full", "copy"]
    path = write_study(tmp_path, raw)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'full' and 'copy' have identical hyperparameters" in err
    raw["methods"]["copy"]["learning_rate"] = 2e-4
    runs = plan(study_from_dict(raw)).runs
    assert len({r.id for r in runs}) == len(runs) == 2


# ---------------------------------------------------------------- report


def test_report_out_never_deletes_a_folder_sftlab_did_not_mark(tmp_path):
    from sftlab.report import ReportOptions, build_report
    from sftlab.report.build import MARKER
    from sftlab.report.synthetic import SyntheticStudy, make_study

    small = SyntheticStudy(models=["m"], datasets=["a"], methods=["full"], sizes=[10],
                           settings=["single"], epochs=1, benchmarks=[("gsm8k", 0)], items=5)
    results = make_study(tmp_path / "study", small)

    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not a report folder written by sftlab"):
        build_report(results, mine, options=ReportOptions())
    assert (mine / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "report"
    build_report(results, out, options=_options(tmp_path))
    assert (out / MARKER).is_file() and (out / "index.html").is_file()
    build_report(results, out, options=_options(tmp_path, format="md"))  # marked: replaced
    assert (out / "index.md").is_file() and not (out / "index.html").exists()


def _options(tmp_path, **kw):
    from sftlab.report import ReportOptions

    return ReportOptions(predictions_root=tmp_path / "study", resamples=20, **kw)


def test_markdown_neutralises_links_and_images_in_model_text():
    from markdown_it import MarkdownIt

    from sftlab.report.document import Example, Output, Section
    from sftlab.report.markdown import render

    hostile = ("see [click me](https://evil.example/x) and ![pixel](https://evil.example/p.png)"
               " <img src=x onerror=alert(1)> `code`\r\r![later](http://evil.example/i.png)"
               " [js](javascript:alert(1))")
    sec = Section("examples", "Example outputs", "intro")
    sec.examples = [Example("gsm8k 0-shot", "1](http://evil.example)", hostile,
                            [Output("m base", hostile, None, "0"), Output("m full", "", None, "1")])]
    page = MarkdownIt("commonmark").render(render("t", [], [sec]))
    assert "<img" not in page and 'href="http' not in page and 'href="javascript' not in page
    assert "evil.example/p.png" in page  # shown, as text


def test_json_files_never_hold_nan(tmp_path):
    from sftlab import jsonio
    from sftlab.evaluate.predictions import write_predictions
    from sftlab.execute.handlers import _store_artefacts

    _store_artefacts(tmp_path, {"id": "r"}, {"value": math.nan, "stderr": [math.inf, 1.0]})
    assert json.loads((tmp_path / "evals" / "r.json").read_text(), parse_constant=_refuse) == {
        "eval_id": "r", "value": None, "stderr": [None, 1.0], "predictions_path": None}
    write_predictions(tmp_path / "p.jsonl", [{"score": math.nan}], {"metrics": {"x": -math.inf}})
    for name in ("p.jsonl", "p.provenance.json"):
        json.loads((tmp_path / name).read_text(), parse_constant=_refuse)
    assert jsonio.dumps({"a": float("nan")}) == '{"a": null}'


def _refuse(name):
    raise AssertionError(f"{name} in a JSON file")


# ---------------------------------------------------------------- score


@pytest.fixture()
def gsm8k_data(tmp_path):
    path = tmp_path / "gsm8k_test.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"x\n#### {i}"}) + "\n"
                            for i in range(4)))
    return path


def test_score_refuses_repeated_ids_and_reports_missing_ones(gsm8k_data, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    rows = [{"id": i, "output": f"#### {i}"} for i in range(3)] + [{"id": 0, "output": "#### 9"}]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["score", "--task", "gsm8k:0", "--data", str(gsm8k_data), "--predictions", str(preds)]
    assert main(args) == 2
    assert "do not have exactly 1 row" in capsys.readouterr().err
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))  # item 3 missing
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    [result] = json.loads(captured.out)["results"]
    assert result["n"] == 4 and result["value"] == 75.0
    assert "missing: 1 of 4 items have no prediction" in captured.err and ": 3" in captured.err
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps({"id": i, "output": f"#### {i}"}) + "\n"
                           for i in range(4) for _ in range(2)))
    assert main(["score", "--task", "gsm8k:0", "--data", str(gsm8k_data), "--predictions",
                 str(two), "--samples", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["value"] == 100.0


def test_score_out_on_an_existing_file_is_a_user_error(gsm8k_data, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": 0, "output": "#### 0"}) + "\n")
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    assert main(["score", "--task", "gsm8k:0", "--data", str(gsm8k_data), "--predictions",
                 str(preds), "--out", str(target)]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_non_utf8_and_deeply_nested_predictions_name_the_file(gsm8k_data, tmp_path, capsys):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"id": 0, "output": "caf\xe9"}\n')
    assert main(["score", "--task", "gsm8k:0", "--data", str(gsm8k_data), "--predictions",
                 str(bad)]) == 2
    err = capsys.readouterr().err
    assert "UTF-8" in err and str(bad) in err
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"id": 0, "output": "x", "n": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert main(["score", "--task", "gsm8k:0", "--data", str(gsm8k_data), "--predictions",
                 str(deep)]) == 2
    assert "nested too deeply" in capsys.readouterr().err


# ---------------------------------------------------------------- damaged and unwritable files


def test_a_damaged_store_is_a_clear_error_for_every_command(tmp_path, capsys):
    raw = small_study(tmp_path)
    path = write_study(tmp_path, raw)
    out = tmp_path / "out"
    out.mkdir()
    (out / "store.sqlite").write_bytes(b"this is not a database at all" * 100)
    for command in (["status", str(path)], ["results", str(path)], ["run", str(path)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "store.sqlite" in err and "move it aside" in err, err
        assert "Traceback" not in err


def test_nul_in_a_path_is_a_user_error(tmp_path, capsys):
    raw = small_study(tmp_path, output_dir=str(tmp_path / "o\0ut"))
    path = write_study(tmp_path, raw)
    assert main(["status", str(path)]) == 2
    assert main(["run", str(path), "--quiet"]) == 2
    assert "NUL" in capsys.readouterr().err


def test_a_file_in_the_way_of_a_folder_is_a_user_error(tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file")
    raw = small_study(tmp_path, output_dir=str(tmp_path / "blocker" / "out"))
    path = write_study(tmp_path, raw)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "blocker" in err and "not a folder" in err


def _can_mount_read_only() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare -m (root)")
def test_status_and_results_read_a_store_in_a_read_only_folder(tmp_path):
    from sftlab.store import Store

    out = tmp_path / "out"
    store = Store.open(out / "store.sqlite")
    store.set_meta(study="hostile", slots=1)
    store.close()
    path = write_study(tmp_path, small_study(tmp_path))
    script = (f"mount --bind {out} {out} && mount -o remount,bind,ro {out} && "
              f"{sys.executable} -m sftlab status {path} --json && "
              f"{sys.executable} -m sftlab results {path} --json && "
              f"{sys.executable} -m sftlab run {path} --quiet")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env={**_env(), "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 2, proc.stderr  # status + results worked; run cannot write
    assert '"study": "hostile"' in proc.stdout and "Traceback" not in proc.stderr
    assert "read-only" in proc.stderr


def _env() -> dict:
    import os

    return dict(os.environ)


def test_plan_estimate_and_serve_port_out_of_range_are_user_errors(tmp_path, capsys):
    raw = small_study(tmp_path)
    raw["methods"]["full"]["epochs"] = 10**30
    path = write_study(tmp_path, raw)
    code = main(["plan", str(path), "--estimate"])
    assert code == 2, capsys.readouterr()
    capsys.readouterr()
    assert main(["serve", "--model", "tiny:llama", "--port", "70000"]) == 2


def test_deeply_nested_and_non_utf8_data_files_name_the_line(tmp_path):
    from sftlab.data.readers import iter_rows

    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"instruction": "a", "response": "b"}\n'
                    '{"instruction": ' + "[" * 100000 + "]" * 100000 + ', "response": "b"}\n')
    rows = list(iter_rows(str(deep)))
    assert rows[0][1] == {"instruction": "a", "response": "b"}
    assert rows[1][0] == f"{deep}:2" and "nested too deeply" in str(rows[1][1])
    array = tmp_path / "deep.json"
    array.write_text("[\n" + "[" * 100000 + "]" * 100000 + "\n]\n")
    with pytest.raises(UserError, match="deep.json:2: JSON nested too deeply"):
        list(iter_rows(str(array)))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"instruction": "ok", "response": "b"}\n{"instruction": "caf\xe9"}\n')
    with pytest.raises(UserError, match="latin.jsonl:2: not UTF-8"):
        list(iter_rows(str(latin)))


def test_smoke_mode_trains_methods_that_shrinking_made_identical_once(tmp_path):
    from sftlab.smoke import SMOKE_BATCH, smoke_study

    raw = small_study(tmp_path)
    raw["methods"]["full"]["batch_size"] = SMOKE_BATCH * 2
    raw["methods"]["big"] = dict(raw["methods"]["full"], type="full", batch_size=SMOKE_BATCH * 8)
    raw["grid"]["methods"] = ["full", "big"]
    study = study_from_dict(raw)
    assert len(plan(study).runs) == 2  # distinct in the real study
    smoke = smoke_study(study)
    assert smoke.grid.methods == ["full"] and len(plan(smoke).runs) == 1
