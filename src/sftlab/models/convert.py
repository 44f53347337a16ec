"""GGUF model files converted into plain transformers folders.

transformers loads a GGUF file with ``from_pretrained(folder, gguf_file=name)``,
dequantising every tensor, but flags the result as quantized: it cannot be saved and
the Trainer refuses it. So the loaded weights are moved into a model built from the
same config without the quantization entry, and saved as safetensors with the
tokenizer (its chat template included, ``model_max_length`` set to the model's
context). The folder loads with transformers alone, trains and serves like any other.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sftlab.atomic import build_folder_once
from sftlab.errors import UserError
from sftlab.fingerprint import file_sha256
from sftlab.models.sources import CONVERT_VERSION, cache_dir

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "sftlab_source.json"  # provenance of a converted folder


def cached_conversion(path: Path) -> Path:
    """The cached folder converted from ``path`` (keyed by its bytes), built on first use."""
    digest = file_sha256(path)
    target = cache_dir() / "models" / f"{path.stem}-{digest[:16]}-v{CONVERT_VERSION}"
    if not target.exists():
        log.warning("converting %s into %s (once; about 20 s for 135M parameters)", path, target)
    return build_folder_once(target, lambda tmp: convert_gguf(path, tmp, digest=digest))


def convert_gguf(path: Path, out_dir: Path, *, digest: str | None = None) -> Path:
    """Write ``path`` (a GGUF file) into ``out_dir`` as a fp32 safetensors folder.

    A file that is not GGUF, is truncated or corrupt, or holds an architecture
    transformers cannot read from GGUF is a :class:`UserError` naming the file.
    """
    _check_magic(path)
    model, tokenizer = _load_gguf(path)
    plain = _unquantized_copy(model)
    tokenizer.model_max_length = int(getattr(plain.config, "max_position_embeddings", 0)
                                     or tokenizer.model_max_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    import transformers

    provenance = {"source_file": path.name, "sha256": digest or file_sha256(path),
                  "converter": f"sftlab models convert v{CONVERT_VERSION}",
                  "transformers": transformers.__version__,
                  "parameters": sum(p.numel() for p in plain.parameters())}
    (out_dir / SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out_dir


def _check_magic(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})")


def _load_gguf(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib_missing("gguf"):
        raise UserError(f"{path}: reading GGUF files needs the 'gguf' package; install it "
                        "with `pip install gguf`")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - any failure to parse a user's file is theirs to fix
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: cannot load this GGUF file with transformers "
                        f"({type(err).__name__}: {first[:300]}); the file may be truncated or "
                        "corrupt, or its architecture unsupported by transformers' GGUF reader") from None
    return model, tokenizer


def _unquantized_copy(model):
    """The same weights in a model built from the config minus its quantization entry."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = ""
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None
