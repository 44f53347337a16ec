"""OpenCompass 0.5.4's own code, loaded from its wheel, to check sftlab's opencompass format.

The wheel is found in ``$SFTLAB_OC_WHEEL`` (a ``.whl`` file or an unzipped folder), else
in ``$SFTLAB_CACHE/opencompass-0.5.4/`` (where ``make test`` puts it with ``pip download
--no-deps opencompass==0.5.4``); :func:`reference` returns None when it cannot be had,
and the tests using it skip.

Nothing of OpenCompass is installed or imported as a package: its files are executed
with an import hook that serves its own modules (``PromptTemplate``, ``PromptList``,
the retrievers, ``LMTemplateParser``, the text postprocessors, config files) from the
wheel and stubs for what only matters at run time (mmengine, torch, the registries,
``datasets``, loggers). The rendering follows ``GenInferencer`` / ``PPLInferencer``:
``retriever.generate_ice`` -> ``generate_prompt_for_generate_task`` (or
``generate_label_prompt``) -> the model's ``parse_template(prompt, mode)``.
"""

from __future__ import annotations

import builtins
import os
import re
import zipfile
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

VERSION = "0.5.4"
STUBBED = ("mmengine", "torch", "datasets", "tqdm", "transformers", "numpy", "sympy",
           "jieba", "rouge", "nltk", "evaluate", "sklearn", "scipy", "latex2sympy2",
           "math_verify")


# OpenCompass modules executed from the wheel when imported; every other one is a stub.
LOADABLE = ("opencompass.utils.prompt", "opencompass.utils.types",
            "opencompass.openicl.icl_prompt_template", "opencompass.utils.text_postprocessors",
            "opencompass.utils.code_execution", "opencompass.datasets.mbpp",
            "opencompass.datasets.humaneval", "opencompass.datasets.math",
            "opencompass.datasets.gsm8k", "opencompass.datasets.natural_question")


class _Anything:
    """A stand-in for any stubbed name: attributes, calls and decorators all work."""

    def __init__(self, name: str = "stub") -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _Anything:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and (callable(args[0]) or isinstance(args[0], type)):
            return args[0]  # used as a decorator: keep the decorated function or class
        return _Anything(f"{self._name}()")

    def __repr__(self) -> str:
        return f"<stub {self._name}>"

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


class _Permissive(ModuleType):
    """A module whose unknown attributes are stubs (config files import many names)."""

    def __getattr__(self, attr: str) -> _Anything:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything(f"{self.__name__}.{attr}")


def wheel_dir() -> Path | None:
    """The unzipped wheel (unzipping a found ``.whl`` next to it), or None."""
    candidates = []
    if os.environ.get("SFTLAB_OC_WHEEL"):
        candidates.append(Path(os.environ["SFTLAB_OC_WHEEL"]))
    cache = os.environ.get("SFTLAB_CACHE")
    if cache:
        candidates.append(Path(cache) / f"opencompass-{VERSION}")
    candidates.append(Path(__file__).resolve().parents[1] / ".cache" / "sftlab"
                      / f"opencompass-{VERSION}")
    for cand in candidates:
        if (cand / "opencompass" / "openicl").is_dir():
            return cand
        wheels = [cand] if cand.suffix == ".whl" else sorted(cand.glob(f"opencompass-{VERSION}-*.whl"))
        for whl in wheels:
            if whl.is_file():
                out = whl.parent / "unpacked"
                if not (out / "opencompass" / "openicl").is_dir():
                    with zipfile.ZipFile(whl) as zf:
                        zf.extractall(out)
                return out
    return None


class OpenCompass:
    """Selected OpenCompass modules executed from the wheel at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mods: dict[str, Any] = {}
        self.prompt = self._load("opencompass.utils.prompt")
        self.template = self._load("opencompass.openicl.icl_prompt_template")
        self.base_retriever = self._load("opencompass.openicl.icl_retriever.icl_base_retriever")
        self.post = self._load("opencompass.utils.text_postprocessors")
        self.parser_cls = self._class_from("opencompass/models/base.py", "LMTemplateParser")

    def module(self, name: str) -> ModuleType:
        """One of the :data:`LOADABLE` modules (e.g. ``opencompass.datasets.mbpp``)."""
        assert name in LOADABLE, name
        return self._load(name)

    # ------------------------------------------------------------ loading

    def _import(self, name: str, globals_=None, locals_=None, fromlist=(), level=0):
        if level:
            pkg = (globals_ or {}).get("__package__") or ""
            parts = pkg.split(".")
            base = ".".join(parts[: len(parts) - level + 1])
            name = f"{base}.{name}" if name else base
        top = name.split(".")[0]
        if top in STUBBED:
            return _Anything(name)
        if top == "opencompass":
            if name == "opencompass.openicl.icl_retriever":
                mod = _Permissive(name)
                mod.BaseRetriever = self.base_retriever.BaseRetriever
                return mod
            if name in self._mods:
                return self._mods[name]
            path = self.root / (name.replace(".", "/") + ".py")
            if name in LOADABLE and path.is_file():
                return self._load(name)
            return _Anything(name)
        return builtins.__import__(name, globals_, locals_, fromlist, level)

    def _namespace(self, name: str, path: Path) -> dict[str, Any]:
        return {"__name__": name, "__file__": str(path),
                "__package__": name.rpartition(".")[0],
                "__builtins__": {**vars(builtins), "__import__": self._import}}

    def _load(self, name: str) -> ModuleType:
        if name in self._mods:
            return self._mods[name]
        path = self.root / (name.replace(".", "/") + ".py")
        mod = ModuleType(name)
        self._mods[name] = mod
        ns = self._namespace(name, path)
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), ns)  # noqa: S102
        mod.__dict__.update(ns)
        return mod

    def _class_from(self, rel: str, cls: str) -> type:
        """One top-level class of a module whose other imports are heavy (models/base.py)."""
        path = self.root / rel
        src = path.read_text(encoding="utf-8")
        start = src.index(f"\nclass {cls}")
        nxt = re.search(r"\n(class |def )\w", src[start + 1:])
        body = src[start: start + 1 + nxt.start()] if nxt else src[start:]
        head = ("from copy import deepcopy\nfrom typing import Dict, List, Optional, Tuple, Union\n"
                "from opencompass.utils.prompt import PromptList\nPromptType = Union[PromptList, str]\n")
        ns = self._namespace("opencompass.models.base", path)
        exec(compile(head + body, str(path), "exec"), ns)  # noqa: S102
        return ns[cls]

    def config(self, rel: str) -> dict[str, Any]:
        """The globals of a config file under ``opencompass/configs/datasets``."""
        path = self.root / "opencompass" / "configs" / "datasets" / rel
        ns = self._namespace("opencompass.configs.datasets", path)
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), ns)  # noqa: S102
        return ns

    # ------------------------------------------------------------ rendering

    def _templates(self, infer_cfg: dict) -> tuple[Any, Any]:
        def build(key: str) -> Any:
            cfg = infer_cfg.get(key)
            if cfg is None:
                return None
            return self.template.PromptTemplate(**{k: v for k, v in cfg.items() if k != "type"})
        return build("ice_template"), build("prompt_template")

    def _retriever(self, infer_cfg: dict, test: list[dict], train: list[dict],
                   output_column: str) -> Any:
        reader = type("Reader", (), {"output_column": output_column})()
        dataset = type("DS", (), {"reader": reader, "train": train, "test": test})()
        kwargs = {k: v for k, v in infer_cfg["retriever"].items()
                  if k in ("ice_separator", "ice_eos_token", "ice_num")}
        return self.base_retriever.BaseRetriever(dataset, **kwargs)

    def render_gen(self, infer_cfg: dict, test: list[dict], idx: int, *, train: list[dict] | None = None,
                   output_column: str, meta_template: dict | None = None) -> str:
        """The string OpenCompass's GenInferencer sends a base model for ``test[idx]``."""
        ice_t, prompt_t = self._templates(infer_cfg)
        retr = self._retriever(infer_cfg, test, train if train is not None else test, output_column)
        ids = list(infer_cfg["retriever"].get("fix_id_list", []))
        ice = retr.generate_ice(ids, ice_template=ice_t)
        prompt = retr.generate_prompt_for_generate_task(idx, ice, ice_template=ice_t,
                                                        prompt_template=prompt_t)
        return self.parser_cls(meta_template).parse_template(prompt, mode="gen")

    def render_ppl(self, infer_cfg: dict, test: list[dict], idx: int, *, train: list[dict] | None = None,
                   output_column: str) -> dict[Any, str]:
        """label -> the full string PPLInferencer scores for ``test[idx]``."""
        ice_t, prompt_t = self._templates(infer_cfg)
        retr = self._retriever(infer_cfg, test, train if train is not None else test, output_column)
        ids = list(infer_cfg["retriever"].get("fix_id_list", []))
        ice = retr.generate_ice(ids, ice_template=ice_t)
        labels = retr.get_labels(ice_template=ice_t, prompt_template=prompt_t)
        out = {}
        for label in labels:
            prompt = retr.generate_label_prompt(idx, ice, label, ice_template=ice_t,
                                                prompt_template=prompt_t)
            out[label] = self.parser_cls(None).parse_template(prompt, mode="ppl")
        return out


@lru_cache(maxsize=1)
def reference() -> OpenCompass | None:
    root = wheel_dir()
    return OpenCompass(root) if root is not None else None
