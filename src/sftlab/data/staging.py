"""All-or-nothing writes of a preparation's files.

Files are written to hidden temp names beside their final names and renamed
into place only by :meth:`Staging.commit`, after every source has succeeded. On
any error the temp files are removed, and so are the folders the staging
created: the data folder is left exactly as it was. Temp names carry the host and
pid (``.<name>.tmp-<host>-<pid>``), so the next preparation removes the temps of a
process that was killed (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from sftlab.atomic import host_tag, temp_tag

log = logging.getLogger(__name__)
_TEMP = re.compile(r"^\..+\.tmp-(?P<host>[^.]+)-(?P<pid>\d+)$")


def temp_name(final: Path) -> Path:
    """The hidden temp file of ``final`` for this process: ``.<name>.tmp-<host>-<pid>``."""
    return final.with_name(f".{final.name}{temp_tag()}")


def remove_stale_temps(folder: Path) -> int:
    """Delete temp files left by killed processes of this host; return how many.

    A temp file belongs to a process that is gone when its host is this machine and
    its pid no longer runs (temps of live processes, or of other hosts sharing the
    folder, are left alone).
    """
    if not folder.is_dir():
        return 0
    host = host_tag()
    removed = 0
    for path in folder.iterdir():
        match = _TEMP.match(path.name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("%s: removed %d temp file(s) left by a killed run", folder, removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class Staging:
    """Temp files waiting to be renamed onto their final paths."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.temps: dict[Path, Path] = {}
        self._created: list[Path] = []

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.rollback()

    def _ensure_folder(self) -> None:
        missing = []
        folder = self.folder
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            path.mkdir()
            self._created.append(path)

    def path(self, final: Path) -> Path:
        """Where ``final``'s content is now: its temp file when staged, else ``final``."""
        return self.temps.get(final, final)

    def write_lines(self, final: Path, lines: Iterable[str]) -> tuple[int, str]:
        """Write ``lines`` (UTF-8) to a temp for ``final``; return (line count, sha256)."""
        self._ensure_folder()
        temp = temp_name(final)
        digest, count = hashlib.sha256(), 0
        with open(temp, "wb") as out:
            self.temps[final] = temp
            for line in lines:
                data = line.encode("utf-8") if isinstance(line, str) else line
                digest.update(data)
                out.write(data)
                count += 1
        return count, digest.hexdigest()

    def commit(self) -> None:
        """Rename every temp file onto its final path."""
        for final, temp in self.temps.items():
            os.replace(temp, final)
        self.temps.clear()
        self._created.clear()

    def rollback(self) -> None:
        """Remove every temp file and every folder this staging created."""
        for temp in self.temps.values():
            temp.unlink(missing_ok=True)
        self.temps.clear()
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass
        self._created.clear()


