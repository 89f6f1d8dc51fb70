"""Which layers a compression method acts on: by type, and by name through ``include`` / ``exclude`` regular
expressions (searched in the module's dotted name); one line when nothing is left."""

from __future__ import annotations

import re

from torch import nn


def select_layers(
    model: nn.Module,
    kinds: tuple[type[nn.Module], ...],
    include: str | None,
    exclude: str | None,
    field: str,
    exact_type: bool = False,
) -> dict[str, nn.Module]:
    """``model``'s modules of ``kinds`` (exactly those types when ``exact_type``: not subclasses such as a
    quantized or factorised layer) whose name matches ``include`` and not ``exclude``, by name."""
    chosen = {}
    for name, module in model.named_modules():
        if not (type(module) in kinds if exact_type else isinstance(module, kinds)):
            continue
        if include is not None and not re.search(include, name):
            continue
        if exclude is not None and re.search(exclude, name):
            continue
        chosen[name] = module
    if not chosen:
        kind_names = "/".join(k.__name__ for k in kinds)
        raise ValueError(
            f"{field}: no {kind_names} layer of {type(model).__name__} matches include={include!r} exclude={exclude!r}"
        )
    return chosen


def replace_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted) of ``model`` is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
