"""The method registry: every method type a study may use, registered here and only here.

A method type is one module with two things (TRL's one-config-one-trainer pairs):

- ``CONFIG``: a pydantic model (a subclass of :class:`~sftlab.study.spec.MethodBase`)
  whose ``type`` literal names the type(s); the study's ``methods.<name>`` is validated
  as the union of every ``CONFIG`` here, discriminated by ``type``;
- ``train(link)``: runs one planned run of that type (a :class:`~sftlab.methods.links.Link`)
  and returns a summary dict. Heavy libraries are imported inside it.

Adding a method type = one new module + one line in :data:`MODULES`. Every list of
method types (study validation, error hints, key suggestions) is derived from it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import Field

from sftlab.methods import cpt, grpo, sft, upscale

#: The registry.
MODULES: tuple[ModuleType, ...] = (sft, cpt, upscale, grpo)


def _types_of(module: ModuleType) -> tuple[str, ...]:
    annotation = module.CONFIG.model_fields["type"].annotation
    assert get_origin(annotation) is Literal, f"{module.__name__}.CONFIG.type must be a Literal"
    return get_args(annotation)


#: method type -> the module that runs it
METHOD_MODULES: dict[str, ModuleType] = {t: m for m in MODULES for t in _types_of(m)}
#: method type -> its config class
METHOD_CONFIGS = {t: m.CONFIG for t, m in METHOD_MODULES.items()}
METHOD_TYPES: tuple[str, ...] = tuple(METHOD_MODULES)
#: What ``Study.methods`` values are: one config per method, chosen by ``type``.
MethodConfig = Annotated[Union[tuple(m.CONFIG for m in MODULES)],  # noqa: UP007
                         Field(discriminator="type")]


def module_for(method_type: str) -> ModuleType:
    """The module that runs ``method_type``."""
    return METHOD_MODULES[method_type]
