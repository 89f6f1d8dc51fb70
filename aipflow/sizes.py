"""Sizes that the data decides. A recipe meant for anyone's data leaves a component's ``num_classes``,
``in_features``, ``in_chans`` or ``in_channels`` null; the ``aipflow`` command sets up the data module first and
fills each null from it (the number of classes, the flattened input size, the image channels), so the same recipe
trains on a 3-class table and a 10-class image folder with only ``--data.*`` changed. The filled values are what
the run's saved config and checkpoints hold. In Python, give the numbers (or call :func:`fill_from_data`)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DATA_SIZED_ARGUMENTS", "check_against_data", "data_sizes", "fill_from_data", "require_size"]

#: the component arguments that a null value hands to the data, and what of the data fills them
DATA_SIZED_ARGUMENTS = {
    "num_classes": "the number of classes",
    "in_features": "the number of input values (features, or channels x height x width)",
    "in_chans": "the image channels",
    "in_channels": "the image channels",
}


def data_sizes(datamodule: Any) -> dict[str, int]:
    """What ``datamodule`` says of :data:`DATA_SIZED_ARGUMENTS`: ``num_classes`` and an ``input_shape`` of
    ``(features,)`` (one channel) or ``(channels, height, width)``; an argument the data module cannot size is
    absent."""
    sizes = {}
    classes = getattr(datamodule, "num_classes", None)
    if classes is not None:
        sizes["num_classes"] = int(classes)
    shape = getattr(datamodule, "input_shape", None)
    if shape:
        sizes["in_features"] = math.prod(int(d) for d in shape)
        if len(shape) == 3:
            sizes["in_chans"] = sizes["in_channels"] = int(shape[0])
        elif len(shape) == 1:  # a flat feature vector is one channel (a CNN over digits' 64 values sees 1 x 8 x 8)
            sizes["in_chans"] = sizes["in_channels"] = 1
    return sizes


def fill_from_data(config: Any, sizes: dict[str, int], prefix: str = "model") -> list[str]:
    """Set every null :data:`DATA_SIZED_ARGUMENTS` entry in the ``init_args`` of ``config`` (a component's
    ``class_path`` / ``init_args`` namespace or dict, searched through nested components) from ``sizes``.
    Returns the filled fields as ``"model.model.in_features=13"``; raises when the data cannot size one."""
    filled: list[str] = []
    _fill(config, sizes, prefix, filled)
    return filled


def check_against_data(config: Any, sizes: dict[str, int], prefix: str = "model") -> list[str]:
    """Compare the sizes the task (``config``: its ``class_path`` / ``init_args``) and its network (``init_args.model``)
    are given with what the data says, before anything is built. A value that is its class's default (the class
    was swapped on the command line and kept, say, MLP's digits sizes) is set from the data and returned as
    ``"model.model.in_features=784 (MLP's default 64 does not fit the data)"``; a value the user gave that
    contradicts the data is one line. A single logit (``num_classes=1``) for two classes is a binary head, not a
    contradiction. Components nested deeper (a head inside a backbone) are not compared: their sizes need not be
    the data's."""
    changed: list[str] = []
    for where, node in ((prefix, config), (f"{prefix}.model", _get(_get(config, "init_args") or {}, "model"))):
        class_path = _get(node, "class_path") if node is not None else None
        init_args = _get(node, "init_args") if class_path else None
        if init_args is None:
            continue
        defaults = _signature_defaults(class_path)
        for key in DATA_SIZED_ARGUMENTS:
            value = _get(init_args, key)
            if value is None or key not in sizes or value == sizes[key]:
                continue
            if key == "num_classes" and value == 1 and sizes[key] == 2:
                continue
            if key in defaults and value == defaults[key]:
                if isinstance(init_args, dict):
                    init_args[key] = sizes[key]
                else:
                    setattr(init_args, key, sizes[key])
                name = class_path.rpartition(".")[2]
                changed.append(f"{where}.{key}={sizes[key]} ({name}'s default {value} does not fit the data)")
                continue
            raise ValueError(
                f"{where}.{key}={value} contradicts the data, which gives {sizes[key]} ({DATA_SIZED_ARGUMENTS[key]}); "
                "leave it out, or null, to take the data's"
            )
    return changed


def _signature_defaults(class_path: str) -> dict[str, Any]:
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}
    return {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}


def require_size(value: int | None, field: str) -> int:
    """``value``, or one line saying that a null size is filled by the command from the data, not in Python."""
    if value is None:
        what = DATA_SIZED_ARGUMENTS.get(field.rsplit(".", 1)[-1], "a size")
        raise ValueError(
            f"{field} is null: the aipflow command fills it from the data module ({what}); in Python give the number"
        )
    if value < 1:
        raise ValueError(f"{field} must be >= 1, got {value}")
    return value


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, dict) else getattr(node, key, None)


def _keys(node: Any) -> list[str]:
    return list(node) if isinstance(node, dict) else list(vars(node))


def _fill(node: Any, sizes: dict[str, int], where: str, filled: list[str]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _fill(item, sizes, f"{where}[{i}]", filled)
        return
    if not isinstance(node, dict) and not hasattr(node, "__dict__"):
        return
    init_args = _get(node, "init_args") if _get(node, "class_path") else None
    if init_args is None:
        return
    for key in _keys(init_args):
        value = _get(init_args, key)
        if key in DATA_SIZED_ARGUMENTS and value is None:
            if key not in sizes:
                raise ValueError(
                    f"{where}.{key} is null, to be filled from the data, but the data module does not give "
                    f"{DATA_SIZED_ARGUMENTS[key]}; give the number"
                )
            if isinstance(init_args, dict):
                init_args[key] = sizes[key]
            else:
                setattr(init_args, key, sizes[key])
            filled.append(f"{where}.{key}={sizes[key]}")
        else:
            _fill(value, sizes, f"{where}.{key}", filled)
