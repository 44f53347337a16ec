"""sftlab.atomic: whole files or nothing at the final path, and no temp left behind."""

from __future__ import annotations

import os
import stat

import pytest

from sftlab import atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_written_bytes_are_exact(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "é\r\nline\n")
    assert (tmp_path / "a.txt").read_bytes() == "é\r\nline\n".encode()  # no newline translation
    atomic.write_text(tmp_path / "l.txt", "é", encoding="latin-1")
    assert (tmp_path / "l.txt").read_bytes() == b"\xe9"
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    atomic.write_json(tmp_path / "c.json", {"b": 1, "a": "é"})
    assert (tmp_path / "c.json").read_text(encoding="utf-8") == '{"b": 1, "a": "é"}\n'
    atomic.write_json(tmp_path / "d.json", {"b": 1, "a": "é"}, indent=2, sort_keys=True,
                      ensure_ascii=True)
    assert (tmp_path / "d.json").read_text() == '{\n  "a": "\\u00e9",\n  "b": 1\n}\n'
    atomic.write_with(tmp_path / "e.bin", lambda tmp: tmp.write_bytes(b"via a library"))
    assert (tmp_path / "e.bin").read_bytes() == b"via a library"
    assert _names(tmp_path) == ["a.txt", "b.bin", "c.json", "d.json", "e.bin", "l.txt"]


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "f.txt"
    atomic.write_text(path, "a much longer first version\n")
    atomic.write_text(path, "short\n")
    assert path.read_text() == "short\n"
    assert _names(tmp_path) == ["f.txt"]


def test_parent_folders_are_created(tmp_path):
    for i, write in enumerate((lambda p: atomic.write_text(p, "x"),
                               lambda p: atomic.write_bytes(p, b"x"),
                               lambda p: atomic.write_json(p, "x"),
                               lambda p: atomic.write_with(p, lambda t: t.write_text("x")))):
        path = tmp_path / f"n{i}" / "deeper" / "f"
        write(path)
        assert path.is_file()


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.json"
    path.write_text("old\n")

    def refuse(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    for write in (lambda: atomic.write_text(path, "new\n"),
                  lambda: atomic.write_bytes(path, b"new\n"),
                  lambda: atomic.write_json(path, {"new": True}),
                  lambda: atomic.write_with(path, lambda tmp: tmp.write_text("new\n"))):
        with pytest.raises(OSError, match="disk went away"):
            write()
        assert path.read_text() == "old\n"
        assert _names(tmp_path) == ["keep.json"]


def test_writer_failing_midway_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "keep.npy"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # not only Exception: a Ctrl-C cleans up too

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(path, half_then_fail)
    with pytest.raises(TypeError):
        atomic.write_json(path, {"x": object()})  # not JSON: fails before any temp exists
    with pytest.raises(UnicodeEncodeError):
        atomic.write_text(path, "é", encoding="ascii")
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["keep.npy"]


def test_failed_write_removes_temp_when_no_file_existed(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("io")))
    with pytest.raises(OSError, match="io"):
        atomic.write_text(tmp_path / "new.txt", "x")
    assert _names(tmp_path) == []


def test_temp_is_hidden_tagged_and_beside_the_file(tmp_path, monkeypatch):
    seen = []
    atomic.write_with(tmp_path / "f.txt", lambda tmp: seen.append(tmp) or tmp.write_text("x"))
    (tmp,) = seen
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".f.txt.")
    assert tmp.name.endswith(f".tmp-{atomic.host_tag()}-{os.getpid()}")


def test_stale_temps_of_atomic_writes_are_recognised(tmp_path):
    """A temp of a killed writer matches what staging's cleanup removes."""
    from sftlab.data.staging import _TEMP

    seen = []
    atomic.write_with(tmp_path / "m.json", lambda tmp: seen.append(tmp.name))
    match = _TEMP.match(seen[0])
    assert match and match["host"] == atomic.host_tag() and match["pid"] == str(os.getpid())


def test_mode_follows_umask_like_a_plain_write(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "f.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644
