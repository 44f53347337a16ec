"""Built-in resources a study can name instead of a hub id or a local path.

- model sources (``tiny:<arch>``, ``.gguf`` files, ``pkg:<package>/<file>``, aliases such
  as ``smollm2-135m``): see :mod:`sftlab.models.sources`;
- ``embedded:<file>`` (``embedded:gsm8k_train.jsonl``) as a dataset or benchmark path:
  a file of the project's generated quickstart data in the real source's native shape
  (``sftlab.data.embedded``), written once into the cache.

The cache is ``$SFTLAB_CACHE`` or ``~/.cache/sftlab``. Anything else is returned as is.
"""

from __future__ import annotations

from sftlab.atomic import build_folder_once
from sftlab.errors import UserError
from sftlab.models.sources import (  # noqa: F401 - re-exported names of the model sources
    CACHE_VERSION,
    TINY_ARCHS,
    TINY_PREFIX,
    cache_dir,
    is_file_source,
)
from sftlab.models.sources import resolve_model_source as resolve_model_path  # noqa: F401

EMBEDDED_PREFIX = "embedded:"


def resolve_data_path(path: str) -> str:
    """A data path ready to open; writes the embedded data on first use."""
    if not path.startswith(EMBEDDED_PREFIX):
        return path
    from sftlab.data.embedded import write_embedded_data

    name = path.removeprefix(EMBEDDED_PREFIX)
    folder = build_folder_once(cache_dir() / "embedded" / f"v{CACHE_VERSION}",
                         lambda tmp: write_embedded_data(tmp))
    if name in ("", "."):
        return str(folder)
    if not (folder / name).exists():
        known = sorted(p.name for p in folder.iterdir())
        raise UserError(f"unknown embedded data '{name}' (expected one of: {', '.join(known)})")
    return str(folder / name)
