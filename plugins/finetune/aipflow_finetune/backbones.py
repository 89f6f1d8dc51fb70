"""Where a pretrained model comes from: a local folder, an installed package that carries one, or a hub name
(read from the local cache when ``HF_HUB_OFFLINE=1``). Every failure is one line naming the field."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

__all__ = ["offline", "resolve_backbone"]

#: how a recipe names a model shipped inside an installed Python package
PACKAGE_PREFIX = "package:"


def offline() -> bool:
    return any(os.environ.get(name, "") not in ("", "0") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_backbone(name: str, field: str) -> str:
    """The folder (or hub name) that ``from_pretrained`` reads for ``name``: a folder with a ``config.json``;
    ``package:<module>`` (the module's ``get_model_path()``, else its ``model/`` folder); or a hub name."""
    if name.startswith(PACKAGE_PREFIX):
        module_name = name[len(PACKAGE_PREFIX) :]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ValueError(
                f"{field}={name!r}: the package {module_name!r} is not installed "
                f"(pip install {module_name.replace('_', '-')})"
            ) from None
        get_path = getattr(module, "get_model_path", None)
        folder = Path(get_path()) if callable(get_path) else Path(module.__file__).parent / "model"
        if not (folder / "config.json").is_file():
            raise ValueError(f"{field}={name!r}: the package has no model folder with a config.json ({folder})")
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{field}={name!r} is a folder without a config.json: not a saved transformers model")
        return str(path)
    if name.startswith(("/", ".", "~")) or os.sep + os.sep in name:
        raise ValueError(f"{field}: no model folder at {name!r}")
    return name  # a hub name


def load_failure(name: str, field: str, err: Exception) -> ValueError:
    """One line for a model or tokenizer that ``from_pretrained`` could not load."""
    where = "the local Hugging Face cache (offline)" if offline() else "the hub or the local cache"
    return ValueError(
        f"{field}={name!r} could not be loaded from {where}: {type(err).__name__}: {str(err).splitlines()[0]}"
    )
