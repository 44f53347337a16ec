"""The lock (constraints) file: the exact versions the test suite passed with.

``requirements.lock`` (``make lock`` writes it from the environment; ``make install`` and
``make test`` install with it as pip constraints, ``LOCK=`` overrides) lists
``name==version`` lines. A study records the versions it ran with
(``study.resolved.yaml``); :func:`mismatches` compares them with the lock, and the report
shows every difference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

LOCK_NAME = "requirements.lock"


def default_lock() -> Path | None:
    """``$SFTLAB_LOCK``, else the lock beside the sources (an editable install), if present."""
    env = os.environ.get("SFTLAB_LOCK")
    if env:
        return Path(env) if Path(env).is_file() else None
    here = Path(__file__).resolve().parents[2] / LOCK_NAME
    return here if here.is_file() else None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """Package (normalised name) -> pinned version, from ``name==version`` lines."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[_norm(name.split("[", 1)[0])] = version.strip()
    return pins


def mismatches(versions: dict[str, str | None], lock: dict[str, str]) -> list[str]:
    """One line per recorded version that differs from the lock (unlocked packages skipped)."""
    out = []
    for name, version in sorted(versions.items()):
        pinned = lock.get(_norm(name))
        if pinned is not None and version != pinned:
            out.append(f"{name} {version or 'not installed'} (lock: {pinned})")
    return out


def study_version_mismatches(out_dir: Path, lock_path: Path | None = None) -> list[str]:
    """Differences between a study's recorded versions (``study.resolved.yaml``) and the lock;
    empty when either is absent."""
    import yaml

    lock_path = lock_path or default_lock()
    resolved = Path(out_dir) / "study.resolved.yaml"
    if lock_path is None or not resolved.is_file():
        return []
    try:
        versions = (yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}).get("_versions") or {}
    except yaml.YAMLError:
        return [f"{resolved}: unreadable, versions not checked against {lock_path.name}"]
    return mismatches(versions, read_lock(lock_path))
