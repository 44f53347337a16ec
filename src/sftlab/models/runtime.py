"""The one model loader: training, the hf evaluation backend and ``sftlab serve`` use it.

:func:`load_model` and :func:`load_tokenizer` take any model source
(:mod:`sftlab.models.sources`: folders, hub ids, ``tiny:``, GGUF files, ``pkg:``,
aliases) and settle device, dtype, attention kernel, PEFT adapters (an sftlab
LoRA/DoRA checkpoint folder names its base model), tokenizer padding side and
``trust_remote_code`` the same way everywhere.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import UserError
from sftlab.models.sources import resolve_model_source

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
BASE_FILE = "sftlab_base.json"  # written into adapter checkpoints: the base model's source


@dataclass
class Loaded:
    """A model ready for inference, with what produced it."""

    model: Any
    tokenizer: Any
    path: str  # the base model's source as named (folder, hub id, alias, ...)
    adapter: str | None
    device: Any  # torch.device
    dtype: str


def resolve_model_and_adapter(model: str, adapter: str | None) -> tuple[str, str | None]:
    """A PEFT adapter folder given as the model is split into (base model, adapter)."""
    path = Path(model)
    if adapter is None and (path / "adapter_config.json").is_file():
        adapter = model
        base_file = path / BASE_FILE
        if base_file.is_file():
            model = json.loads(base_file.read_text())["base_model"]
        else:
            model = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    return model, adapter


def resolve_device(device: str | None) -> Any:
    """``None`` / ``auto`` -> CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: Any) -> str:
    """``auto`` -> bfloat16 on a GPU, float32 on CPU."""
    dtype = dtype or "auto"
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        return "bfloat16" if str(device).startswith("cuda") else "float32"
    return dtype


def load_tokenizer(source: str, *, revision: str | None = None, trust_remote_code: bool = False,
                   padding_side: str | None = None, require_eos: bool = False) -> Any:
    """The tokenizer of a model source; a pad token is set (EOS) when it has none."""
    from transformers import AutoTokenizer

    path = resolve_model_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the tokenizer of '{source}': {_first_line(err)}") from None
    if tokenizer.eos_token is None and require_eos:
        raise UserError(f"the tokenizer of {source} has no EOS token; responses need one")
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_model(source: str, *, adapter: str | None = None, device: str | None = "auto",
               dtype: str | None = "auto", attention: str | None = None,
               trust_remote_code: bool = False, revision: str | None = None,
               merge_adapter: bool = True) -> Any:
    """A causal LM from any model source, optionally with a PEFT adapter (merged).

    ``device=None`` leaves the model where it was loaded (CPU; the Trainer moves it).
    """
    import torch
    from transformers import AutoModelForCausalLM

    target = resolve_device(device) if device is not None else torch.device("cpu")
    dtype_name = resolve_dtype(dtype, target)
    path = resolve_model_source(source)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype_name),
                              "trust_remote_code": trust_remote_code, "revision": revision}
    if attention:
        kwargs["attn_implementation"] = attention
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if adapter:
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, adapter)
            lm = lm.merge_and_unload() if merge_adapter else lm
    except (OSError, ValueError) as err:  # a missing / broken folder, an unknown hub id
        with_adapter = f" with adapter '{adapter}'" if adapter else ""
        raise UserError(f"cannot load the model '{source}'{with_adapter}: {_first_line(err)}") from None
    return lm.to(target) if device is not None else lm


def load_for_inference(model: str, *, adapter: str | None = None, device: str | None = "auto",
                       dtype: str | None = "auto", attention: str | None = None,
                       trust_remote_code: bool = False) -> Loaded:
    """Model (eval mode, adapter merged) and tokenizer, as evaluation and serving use them.

    ``model`` may be an sftlab LoRA/DoRA checkpoint folder: its base model is read from
    ``sftlab_base.json`` (or the adapter config) and the folder is the adapter; the
    tokenizer comes from the adapter folder when it has one.
    """
    base, adapter = resolve_model_and_adapter(model, adapter)
    for what, path in (("model", base), ("adapter", adapter)):
        if path and _looks_local(path) and not Path(path).expanduser().exists():
            raise UserError(f"cannot load {what} '{path}': no such file or folder")
    target = resolve_device(device)
    dtype_name = resolve_dtype(dtype, target)
    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base
    tokenizer = load_tokenizer(tok_source, trust_remote_code=trust_remote_code)
    lm = load_model(base, adapter=adapter, device=str(target), dtype=dtype_name,
                    attention=attention, trust_remote_code=trust_remote_code)
    return Loaded(lm.eval(), tokenizer, base, adapter, target, dtype_name)


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def plain_head(model: Any, ids: Any) -> bool:
    """Whether ``head(decoder(x))`` gives ``model``'s own logits on the token row ``ids``
    (``[1, T]``): no logit scaling, soft-capping or other step after the output embedding.

    Code that applies the output head itself, at the positions it needs only (the hf
    backend's scored positions, training's labelled positions), asks this once and
    otherwise uses the model's own forward pass. Tried without gradients in eval mode
    (dropout off); the model's mode is restored.
    """
    import torch

    training = model.training
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        if decoder is None or head is None:
            return False
        model.eval()
        with torch.no_grad():
            want = model(input_ids=ids).logits[0]
            got = head(decoder(input_ids=ids).last_hidden_state)[0]
    except Exception:  # noqa: BLE001 - any failure: use the model's own forward pass
        return False
    finally:
        model.train(training)
    return want.shape == got.shape and bool(torch.allclose(want, got, atol=1e-4, rtol=1e-4))
