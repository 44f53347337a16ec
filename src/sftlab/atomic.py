"""Atomic artefacts: a folder built under a temp name and renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


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
