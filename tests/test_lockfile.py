"""The lock file: parsed, compared with a study's recorded versions, shown in the report."""

from __future__ import annotations

import importlib.metadata as md

import yaml

from sftlab.lockfile import default_lock, mismatches, read_lock, study_version_mismatches


def test_repository_lock_pins_the_suites_libraries():
    lock = default_lock()
    assert lock is not None and lock.name == "requirements.lock"
    pins = read_lock(lock)
    for name in ("transformers", "trl", "peft", "datasets", "pydantic"):
        assert name in pins, name
    assert "torch" not in pins  # chosen per machine by TORCH_SPEC


def test_mismatches_and_study_check(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\nTransformers==5.0.0\ntrl==1.0\npeft[extra]==0.1  # pinned\n")
    assert read_lock(lock) == {"transformers": "5.0.0", "trl": "1.0", "peft": "0.1"}
    assert mismatches({"transformers": "5.0.0", "trl": "1.1", "peft": None, "torch": "2"},
                      read_lock(lock)) == ["peft not installed (lock: 0.1)", "trl 1.1 (lock: 1.0)"]
    (tmp_path / "study.resolved.yaml").write_text(yaml.safe_dump(
        {"name": "s", "_versions": {"transformers": "4.0.0", "trl": "1.0"}}))
    assert study_version_mismatches(tmp_path, lock) == ["transformers 4.0.0 (lock: 5.0.0)"]
    assert study_version_mismatches(tmp_path / "none", lock) == []


def test_report_shows_lock_mismatches(tmp_path, monkeypatch):
    from sftlab.commands.report import _lock_notes

    lock = tmp_path / "requirements.lock"
    lock.write_text(f"pyyaml=={md.version('pyyaml')}\ntransformers==0.0.1\n")
    monkeypatch.setenv("SFTLAB_LOCK", str(lock))
    (tmp_path / "study.resolved.yaml").write_text(yaml.safe_dump(
        {"_versions": {"transformers": md.version("transformers")}}))
    [note] = _lock_notes(tmp_path)
    assert "differ from the lock file" in note and "(lock: 0.0.1)" in note
