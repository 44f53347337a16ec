"""User-facing errors: reported without a traceback, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad study, bad data, bad flag).

    ``problems`` holds every problem found, each a one-line message that names
    the file, line or key path, so the CLI can report them all at once.
    """

    exit_code = 2

    def __init__(self, problems: str | list[str], *, where: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.where = where
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.where}: " if self.where and len(self.problems) == 1 else ""
        if head and self.problems[0].startswith(f"{self.where}:"):
            head = ""  # the problem already names its file (and line)
        if len(self.problems) == 1:
            return head + self.problems[0]
        lines = [f"{self.where}: {len(self.problems)} problems" if self.where else
                 f"{len(self.problems)} problems"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def from_environment(err: BaseException) -> UserError | None:
    """The :class:`UserError` for an exception that user files or the machine caused
    (a damaged SQLite file, a read-only or missing folder, a NUL in a path, a file that is
    not UTF-8, data nested too deeply, memory exhausted), else None (a bug: let it show).

    This is the CLI's one error boundary; the message names the file where it is known.
    """
    import errno
    import sqlite3

    if isinstance(err, sqlite3.DatabaseError):
        return UserError(f"a SQLite file is damaged or unreadable ({err}); if it is the study's "
                         "store.sqlite, move it aside and run `sftlab run` again (the store is "
                         "rebuilt from the artefacts on disk); a judgments.sqlite cache can "
                         "simply be deleted", where=_file_of(err))
    if isinstance(err, OSError):
        name = err.filename or _file_of(err)
        hint = {errno.EROFS: "the file system is read-only; choose a writable output_dir",
                errno.EACCES: "permission denied; check the folder's permissions",
                errno.EPERM: "permission denied; check the folder's permissions",
                errno.ENOTDIR: "a part of the path is a file, not a folder",
                errno.ENOSPC: "the disk is full; free space and run again",
                errno.ENAMETOOLONG: "the path is too long"}.get(err.errno, "")
        text = err.strerror or str(err)
        return UserError(f"{text}{'; ' + hint if hint else ''}", where=str(name) if name else None)
    if isinstance(err, ValueError) and "null" in str(err) and ("byte" in str(err)
                                                               or "character" in str(err)):
        return UserError(f"a path contains a NUL character ({err}); remove it")
    if isinstance(err, UnicodeDecodeError):
        return UserError(f"not UTF-8 text (byte {err.start}: {err.reason}); save the file as "
                         "UTF-8", where=_file_of(err))
    if isinstance(err, RecursionError):
        return UserError("the input is nested too deeply to read (thousands of levels); "
                         "flatten it", where=_file_of(err))
    if isinstance(err, MemoryError):
        return UserError("out of memory reading the input; it is far larger than expected",
                         where=_file_of(err))
    return None


def _file_of(err: BaseException) -> str | None:
    """The innermost file path the failing code was handling (a local named ``path``,
    ``file`` or ``filename`` that names an existing file), to name it in the message."""
    import os
    from pathlib import PurePath

    tb = err.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in ("path", "file", "filename", "source", "database"):
            value = frame.f_locals.get(name)
            if isinstance(value, str | PurePath) and "\0" not in str(value):
                try:
                    if os.path.isfile(value):
                        return str(value)
                except (OSError, ValueError):
                    continue
    return None
