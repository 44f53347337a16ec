"""Atomic artefacts: a file written under a temp name and renamed into place, or a
folder built under a temp name and renamed into place.

A file's temp name is hidden, unique and tagged with this host and pid
(``.<name>.<random>.tmp-<host>-<pid>``), in the file's own folder (so the rename is
atomic). Readers never see a half-written file at the final path; a failed write
removes its temp and leaves the previous file untouched. The tag lets a later run
tell the temps of a killed process from those of a live one
(:func:`sftlab.data.staging.remove_stale_temps`); ``.tmp-`` in the name is what
:func:`sftlab.train.checkpoints.clean_partial` removes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def host_tag() -> str:
    """This machine's name as it appears in temp names (no dots, never empty)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temp_tag() -> str:
    """The end of every temp name this process writes: ``.tmp-<host>-<pid>``."""
    return f".tmp-{host_tag()}-{os.getpid()}"


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temp file beside ``path``: (open fd for writing, its path).

    Created with mode 0o666 less the umask, as a plain ``open(path, "w")`` would be
    (``tempfile.mkstemp`` would make it 0o600).
    """
    tag = temp_tag()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{tag}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {path}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_with(path: Path, writer: Callable[[Path], object], *, fsync: bool = True) -> None:
    """Write ``path`` by ``writer(tmp)`` into a temp file beside it, then rename it into
    place. ``writer`` gets the path of an existing empty file to overwrite (for libraries
    that save to a path: matplotlib, numpy, safetensors). The parent folder is created
    when missing; on any error the temp is removed and ``path`` left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        writer(tmp)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file, flush, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically; newlines are written as given (no
    translation), so the bytes are ``text.encode(encoding)``."""
    write_bytes(path, text.encode(encoding), fsync=fsync)


def write_json(path: Path, data: Any, *, indent: int | None = None, sort_keys: bool = False,
               ensure_ascii: bool = False, fsync: bool = True) -> None:
    """Write ``json.dumps(data, ...)`` plus a newline to ``path`` atomically."""
    text = json.dumps(data, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)
    write_text(path, text + "\n", fsync=fsync)


def build_folder_once(target: Path, build: Callable[[Path], object]) -> Path:
    """``target``, built on first use by ``build(tmp)`` in a temp folder beside it and
    renamed into place; a failed build leaves nothing behind (race-safe: a concurrent
    builder that wins the rename is kept)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
