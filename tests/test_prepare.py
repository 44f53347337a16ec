"""`prepare`: samples and mixtures under every tokenizer, cached, byte-identical, atomic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sftlab.cli import main
from sftlab.data import filtering
from sftlab.data.filtering import TokenizerRef, load_tokenizer, token_lengths
from sftlab.data.prepare import prepare, training_set_path
from sftlab.data.sampling import derive_seed, permutation
from sftlab.errors import UserError
from sftlab.study import plan, study_from_dict
from sftlab.study.template import render_prompt


def alpaca_rows(n: int, prefix: str = "task") -> list[dict]:
    return [{"instruction": f"{prefix} {i}: reverse the word", "input": f"w{i}",
             "output": f"{i}w"} for i in range(n)]


def write(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def make_study(tmp_path: Path, models: list[Path], datasets: list[dict], *, sizes=(5, 10),
               settings=("single", "all", "leave_one_out"), **extra):
    raw = {
        "name": "prep", "seed": 7, "output_dir": str(tmp_path / "out"), "max_length": 256,
        "models": [{"name": p.name.split("-")[0], "path": str(p)} for p in models],
        "datasets": datasets,
        "grid": {"sizes": list(sizes), "methods": ["full"], "settings": list(settings)},
        "methods": {"full": {"learning_rate": 1e-5, "batch_size": 4, "epochs": 1}},
        **extra,
    }
    return study_from_dict(raw)


@pytest.fixture
def two_sources(tmp_path) -> list[dict]:
    gsm = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}
           for i in range(14)]
    return [
        {"name": "alpaca", "format": "alpaca", "path": write(tmp_path / "a.json", alpaca_rows(12))},
        {"name": "gsm", "format": "jsonl", "path": write(tmp_path / "g.jsonl", gsm),
         "fields": {"instruction": "question", "response": "answer"}},
    ]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_every_training_set_with_the_row_contract(tmp_path, tiny_llama, tiny_qwen2,
                                                         two_sources):
    study = make_study(tmp_path, [tiny_llama, tiny_qwen2], two_sources)
    report = prepare(study, progress=False)
    the_plan = plan(study)
    assert {t.key for t in report.training_sets} == {s.key for s in the_plan.training_sets}
    for run in the_plan.runs:  # every run of every model finds its file
        assert training_set_path(study, run.data_key).is_file()
    for spec in the_plan.training_sets:
        rows = read_rows(training_set_path(study, spec.key))
        assert len(rows) == spec.size * len(spec.sources)
        assert Counter(r["source"] for r in rows) == {n: spec.size for n in spec.sources}
        for r in rows:
            assert list(r) == ["id", "source", "instruction", "response", "prompt", "completion"]
            assert r["prompt"] == render_prompt(study.template, r["instruction"])
            assert r["completion"] == r["response"]
    a_row = next(r for r in read_rows(training_set_path(study, the_plan.training_sets[0].key)))
    assert a_row["instruction"].endswith(f"\n\nw{a_row['id'].split('/')[1]}")  # alpaca input joined
    manifest = json.loads((study.out_dir / "data" / "manifest.json").read_text())
    assert set(manifest["training_sets"]) == {s.key for s in the_plan.training_sets}


def test_unicode_line_separators_stay_inside_their_row(tmp_path, tiny_llama):
    """GSM8K's train split holds U+2028 inside questions: a written row must still be one
    line for every JSONL reader (``str.splitlines`` splits on it) and read back unchanged."""
    odd = ["\u2028", "\u2029", "\u0085"]
    rows = [{"question": f"Q{i}.{odd[i % 3]}How many?", "answer": f"#### {i}"} for i in range(6)]
    source = {"name": "gsm", "format": "jsonl", "path": write(tmp_path / "g.jsonl", rows),
              "fields": {"instruction": "question", "response": "answer"}}
    study = make_study(tmp_path, [tiny_llama], [source], sizes=(6,), settings=("single",))
    prepare(study, progress=False)
    [spec] = plan(study).training_sets
    text = training_set_path(study, spec.key).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 6
    assert sorted(json.loads(x)["instruction"] for x in lines) == sorted(r["question"] for r in rows)


def test_samples_are_nested_and_mixtures_are_their_union(tmp_path, tiny_llama, two_sources):
    study = make_study(tmp_path, [tiny_llama], two_sources)
    prepare(study, progress=False)
    sets = plan(study).training_sets
    small = {s.sources[0]: s for s in sets if s.setting == "single" and s.size == 5}
    large = {s.sources[0]: s for s in sets if s.setting == "single" and s.size == 10}
    for name in small:
        lines_small = training_set_path(study, small[name].key).read_bytes().splitlines()
        lines_large = training_set_path(study, large[name].key).read_bytes().splitlines()
        assert lines_large[:5] == lines_small  # the 5-sample is the head of the 10-sample
    for mix in (s for s in sets if s.setting != "single"):
        parts = [line for k in mix.parts for line in
                 training_set_path(study, k).read_bytes().splitlines()]
        mixed = training_set_path(study, mix.key).read_bytes().splitlines()
        assert Counter(mixed) == Counter(parts)  # byte-identical rows, each once
        if mix.setting == "all":  # >= 10 rows: the identity permutation has odds 1/10!
            assert mixed != parts  # shuffled, not concatenated
    assert permutation(8, derive_seed(42, "x")) == [7, 0, 3, 2, 1, 5, 6, 4]  # stable seeding


def test_duplicates_are_counted_and_dropped(tmp_path, tiny_llama):
    rows = alpaca_rows(6) + alpaca_rows(3)  # 3 exact duplicates
    data = [{"name": "a", "format": "alpaca", "path": write(tmp_path / "a.json", rows)}]
    study = make_study(tmp_path, [tiny_llama], data, sizes=(6,), settings=("single",))
    source = prepare(study, progress=False).to_json()["sources"][0]
    assert source == {**source, "read": 9, "duplicates": 3, "kept": 6, "bad": 0}


def _lengths(model: Path, texts: list[str]) -> list[int]:
    tok = load_tokenizer(TokenizerRef(str(model), None, False, ("m",)))
    return token_lengths(tok, [t + tok.eos_token for t in texts]).tolist()


def test_length_filter_counts_drops_per_tokenizer(tmp_path, tiny_llama, tiny_olmo):
    """A max_length between two tokenizers' lengths of one row drops it under one only,
    and the examples are the same for both models."""
    long_row = {"instruction": "Add 123456789 and 987654321 then 555444333",
                "input": "", "output": " ".join(str(7 ** k) for k in range(30))}
    rows = alpaca_rows(6) + [long_row]
    data = [{"name": "a", "format": "alpaca", "path": write(tmp_path / "a.json", rows)}]
    template = "###Question: {instruction}\n\n###Answer: {response}"
    texts = [render_prompt(template, r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""))
             + r["output"] for r in rows]
    llama, olmo = _lengths(tiny_llama, texts), _lengths(tiny_olmo, texts)
    assert llama[-1] != olmo[-1], "the tiny tokenizers must differ on digits"
    limit = min(llama[-1], olmo[-1])
    assert max(llama[:-1] + olmo[:-1]) <= limit
    study = make_study(tmp_path, [tiny_llama, tiny_olmo], data, sizes=(6,),
                       settings=("single",), max_length=limit)
    report = prepare(study, progress=False)
    longer = "llama" if llama[-1] > olmo[-1] else "olmo"
    shorter = "olmo" if longer == "llama" else "llama"
    source = report.sources[0]
    assert source.dropped_by_length == {longer: 1, shorter: 0}
    assert source.kept == 6
    assert source.token_lengths[longer]["max"] == max(llama[-1], olmo[-1])
    kept = read_rows(Path(report.training_sets[0].path))
    assert all(r["instruction"] != long_row["instruction"] for r in kept)
    # the same study with the shorter-tokenizer model alone keeps the long row
    alone = make_study(tmp_path / "alone", [tiny_llama if shorter == "llama" else tiny_olmo],
                       data, sizes=(7,), settings=("single",), max_length=limit)
    assert prepare(alone, progress=False).sources[0].kept == 7


def test_rerun_is_a_cache_hit_and_byte_identical(tmp_path, tiny_llama, tiny_qwen2, two_sources,
                                                 monkeypatch):
    study = make_study(tmp_path, [tiny_llama, tiny_qwen2], two_sources)
    first = prepare(study, progress=False)
    assert not first.cached
    folder = study.out_dir / "data"
    before = snapshot(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_tokenising(*args, **kwargs):
        raise AssertionError("a cache hit must not tokenise")

    monkeypatch.setattr(filtering, "token_lengths", no_tokenising)
    monkeypatch.setattr("sftlab.data.prepare.load_tokenizer", no_tokenising)
    second = prepare(study, progress=False)
    assert second.cached and second.to_json() == first.to_json()
    assert snapshot(folder) == before
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    monkeypatch.undo()
    # a fresh folder gives the same bytes (deterministic, machine-independent)
    again = make_study(tmp_path / "again", [tiny_llama, tiny_qwen2], two_sources)
    prepare(again, progress=False)
    assert snapshot(again.out_dir / "data") == before


def test_changed_source_or_lost_file_is_prepared_again(tmp_path, tiny_llama, two_sources):
    study = make_study(tmp_path, [tiny_llama], two_sources, settings=("single", "all"))
    prepare(study, progress=False)
    key = plan(study).training_sets[0].key
    training_set_path(study, key).unlink()
    report = prepare(study, progress=False)
    assert training_set_path(study, key).is_file()
    assert [s.cached for s in report.sources] == [False, True]
    write(Path(two_sources[0]["path"]), alpaca_rows(12, prefix="changed"))
    report = prepare(study, progress=False)
    assert [s.cached for s in report.sources] == [False, True]
    new_key = plan(study).training_sets[0].key
    assert new_key != key  # the content is part of the key, so runs on it get new ids
    assert "changed" in read_rows(training_set_path(study, new_key))[0]["instruction"]
    assert "changed" not in read_rows(training_set_path(study, key))[0]["instruction"]
    mixture = next(t for t in report.training_sets if t.setting == "all")
    assert not mixture.cached  # its part changed, so it was rebuilt
    assert Counter(r["source"] for r in read_rows(Path(mixture.path))) == {"alpaca": 5, "gsm": 5}


def test_too_few_survivors_is_an_error_naming_numbers(tmp_path, tiny_llama):
    data = [{"name": "small", "format": "alpaca", "path": write(tmp_path / "a.json", alpaca_rows(4))},
            {"name": "tiny", "format": "alpaca", "path": write(tmp_path / "b.json", alpaca_rows(3))}]
    study = make_study(tmp_path, [tiny_llama], data, sizes=(5,))
    with pytest.raises(UserError) as info:
        prepare(study, progress=False)
    msg = info.value.render()
    assert "dataset 'small': size 5 asked for, but only 4 example(s) survive (read 4" in msg
    assert "dataset 'tiny': size 5 asked for, but only 3" in msg  # every problem at once
    assert "allow_smaller" in msg
    assert not (tmp_path / "out").exists()


def test_allow_smaller_takes_every_survivor(tmp_path, tiny_llama):
    data = [{"name": "small", "format": "alpaca", "allow_smaller": True,
             "path": write(tmp_path / "a.json", alpaca_rows(4))},
            {"name": "big", "format": "alpaca", "path": write(tmp_path / "b.json", alpaca_rows(9))}]
    study = make_study(tmp_path, [tiny_llama], data, sizes=(3, 5), settings=("single", "all"))
    report = prepare(study, progress=False)
    rows = {(t.setting, t.size, tuple(t.sources)): t.rows for t in report.training_sets}
    assert rows[("single", 5, ("small",))] == 4
    assert rows[("single", 3, ("small",))] == 3
    assert rows[("all", 5, ("small", "big"))] == 9
    assert report.sources[0].smaller_sizes == [5] and report.sources[1].smaller_sizes == []


def test_bad_data_leaves_the_data_folder_unchanged(tmp_path, tiny_llama, two_sources):
    study = make_study(tmp_path, [tiny_llama], two_sources)
    prepare(study, progress=False)
    folder = study.out_dir / "data"
    before = snapshot(folder)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n', encoding="utf-8")
    worse = [*two_sources, {"name": "broken", "format": "alpaca", "path": str(broken)}]
    bigger = make_study(tmp_path, [tiny_llama], worse, sizes=(5, 10, 11))
    with pytest.raises(UserError, match=rf"{broken}:2: broken JSON line"):
        prepare(bigger, progress=False)
    assert snapshot(folder) == before  # no new sample of the good sources, no temp file


def test_duplicate_dataset_definitions_are_refused(tmp_path, tiny_llama, two_sources):
    twin = {**two_sources[0], "name": "alpaca2"}
    study = make_study(tmp_path, [tiny_llama], [*two_sources, twin])
    with pytest.raises(UserError, match="reads the same data as 'alpaca'"):
        prepare(study, progress=False)


def test_missing_tokenizer_is_a_user_error(tmp_path, two_sources):
    study = make_study(tmp_path, [tmp_path / "no-model"], two_sources)
    with pytest.raises(UserError, match="cannot load the tokenizer of model"):
        prepare(study, progress=False)
    assert not (tmp_path / "out").exists()


# --- the command --------------------------------------------------------------------


def study_file(tmp_path: Path, models: list[Path], datasets: list[dict], **extra) -> Path:
    import yaml

    raw = {"name": "cli", "output_dir": str(tmp_path / "out"), "max_length": 256,
           "models": [{"name": p.name.split("-")[0], "path": str(p)} for p in models],
           "datasets": datasets,
           "grid": {"sizes": [4], "methods": ["full"], "settings": ["single", "all"]},
           "methods": {"full": {"learning_rate": 1e-5, "batch_size": 4, "epochs": 1}}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_cli_json_output_shape(tmp_path, tiny_llama, tiny_qwen2, two_sources, capsys):
    path = study_file(tmp_path, [tiny_llama, tiny_qwen2], two_sources)
    assert main(["prepare", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"training_sets", "sources"}
    for t in out["training_sets"]:
        assert {"key", "setting", "size", "sources", "rows", "path", "sha256"} <= set(t)
        assert Path(t["path"]).is_file()
    assert [s["name"] for s in out["sources"]] == ["alpaca", "gsm"]
    for s in out["sources"]:
        assert {"name", "read", "bad", "duplicates", "dropped_by_length", "kept"} <= set(s)
        assert set(s["dropped_by_length"]) == {"llama", "qwen2"}
    assert main(["prepare", str(path), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "p50 / p90 / p99 / max" in table and "nothing to do" in table
    assert "all (2)" in table  # the mixture, named as `sftlab plan` names it


def test_cli_bad_data_exits_2_without_output(tmp_path, tiny_llama, capsys):
    rows = tmp_path / "a.json"
    rows.write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "z"}]))
    path = study_file(tmp_path, [tiny_llama],
                      [{"name": "a", "format": "alpaca", "path": str(rows)}])
    assert main(["prepare", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{rows}:1 (item 1): missing field 'output'" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_cli_bad_study_exits_2(tmp_path, capsys):
    path = study_file(tmp_path, [tmp_path / "m"],
                      [{"name": "a", "format": "alpacca", "path": "a.json"}])
    assert main(["prepare", str(path)]) == 2
    assert "unknown format 'alpacca' (did you mean 'alpaca'?)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_whole_file_problems_name_the_dataset(tmp_path, tiny_llama, two_sources, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("", encoding="utf-8")
    path = study_file(tmp_path, [tiny_llama],
                      [*two_sources, {"name": "e", "format": "alpaca", "path": str(empty)}])
    assert main(["prepare", str(path)]) == 2
    assert f"datasets[2] (e): {empty}: the file is empty" in capsys.readouterr().err
    path = study_file(tmp_path, [tiny_llama],
                      [{"name": "gone", "format": "alpaca", "path": "data/gone.json"}])
    assert main(["prepare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "datasets[0].path: data file not found: data/gone.json (looked for " in err
    assert str(tmp_path / "data" / "gone.json") in err  # beside the study file
    assert not (tmp_path / "out").exists()


def test_temps_of_killed_runs_are_removed(tmp_path, tiny_llama, two_sources):
    import subprocess
    import sys

    from sftlab.data.staging import temp_name

    study = make_study(tmp_path, [tiny_llama], two_sources, settings=("single",))
    folder = study.out_dir / "data"
    folder.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    mine = temp_name(folder / "a.jsonl")  # this live process
    dead = mine.with_name(mine.name.rsplit("-", 1)[0] + f"-{gone}")
    other_host = folder / f".b.jsonl.tmp-elsewhere-{gone}"
    for temp in (mine, dead, other_host):
        temp.write_text("half a line")
    prepare(study, progress=False)
    assert not dead.exists()  # left by a killed run on this host
    assert mine.exists() and other_host.exists()  # live, or not ours to judge
    assert len(list(folder.glob("*.jsonl"))) == len(plan(study).training_sets)
