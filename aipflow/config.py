"""Recipes (by name or path) and short component names in configs, resolved before LightningCLI parses them."""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path
from typing import Any

import yaml

from aipflow.plugins import CORE_SOURCE, Registry, get_registry

__all__ = ["ConfigError", "list_recipes", "resolve_recipe", "rewrite_short_names"]


class ConfigError(Exception):
    """A config that cannot run; the message names the field, the value and what was expected."""


def list_recipes(registry: Registry | None = None) -> dict[str, Path]:
    """Recipe name -> file, each recipe once: the core's by stem, a plugin's as ``<plugin>/<stem>``. A plugin
    recipe's bare stem also works with ``--config`` when no other recipe has it (:func:`recipe_aliases`)."""
    registry = registry or get_registry()
    named: dict[str, Path] = {}
    for source, folder in registry.recipe_dirs():
        for path in sorted(folder.glob("*.yaml")):
            named[path.stem if source == "aipflow" else f"{source}/{path.stem}"] = path
    return named


def recipe_aliases(recipes: dict[str, Path]) -> dict[str, Path]:
    """Bare stems of plugin recipes that name exactly one recipe and no core recipe: ``pu_nnpu`` for
    ``weaksup/pu_nnpu``."""
    bare: dict[str, list[Path]] = {}
    for name, path in recipes.items():
        if "/" in name:
            bare.setdefault(name.rsplit("/", 1)[1], []).append(path)
    return {stem: paths[0] for stem, paths in bare.items() if len(paths) == 1 and stem not in recipes}


def resolve_recipe(spec: str, registry: Registry | None = None) -> Path:
    """A path that exists, or a recipe name (``quickstart``, ``weaksup/nnpu``, or ``nnpu`` when unambiguous).

    A spec that looks like a path (a ``.yaml`` / ``.yml`` suffix or a folder separator that names no recipe) and
    does not exist is reported as a missing file, not as an unknown recipe name."""
    path = Path(spec)
    if path.is_file():
        return path
    recipes = list_recipes(registry)
    known = {**recipe_aliases(recipes), **recipes}
    if spec in known:
        return known[spec]
    stem = path.stem if path.suffix in (".yaml", ".yml") else spec
    if stem in known and path.parent == Path("."):
        return known[stem]
    if path.suffix in (".yaml", ".yml") or (os.sep in spec and spec not in known):
        where = path.parent if str(path.parent) != "." else Path.cwd()
        reason = "no such file" if where.is_dir() else f"no such folder {str(where)!r}"
        if path.is_dir():
            reason = "is a folder, not a file"
        raise ConfigError(f"--config: {spec!r}: {reason}")
    close = difflib.get_close_matches(stem, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"--config: {spec!r} is neither a file nor a recipe name{hint} (`aipflow recipes` lists them)")


#: keys whose value is a component: there a bare string (``loss: GCE``) is read as a class name. Elsewhere a
#: string stays a string (a logger named "SAM" keeps its name).
COMPONENT_KEYS = frozenset(
    {"model", "data", "loss", "optimizer", "base_optimizer", "lr_scheduler", "logger", "callbacks", "plugins"}
)


def rewrite_short_names(config: Any, registry: Registry | None = None, where: str = "", key: str = "") -> Any:
    """Return ``config`` with every registered short name replaced by its import path.

    ``class_path`` values must be registered short names or dotted import paths; an unknown short name is an
    error naming the closest valid names. A bare string under a component key (``loss: GCE``, an item of
    ``callbacks``) that is a registered name is replaced too. A dotted path into a plugin that failed to load
    is an error naming that plugin's distribution, version and exception.
    """
    registry = registry or get_registry()
    if isinstance(config, dict):
        out = {}
        for k, value in config.items():
            field = f"{where}.{k}" if where else str(k)
            if k == "class_path" and isinstance(value, str):
                out[k] = _resolve_class_path(value, field, registry)
            else:
                out[k] = rewrite_short_names(value, registry, field, str(k))
        return out
    if isinstance(config, list):
        return [rewrite_short_names(v, registry, f"{where}[{i}]", key) for i, v in enumerate(config)]
    if isinstance(config, str) and key in COMPONENT_KEYS and config in registry:
        return _import_path(config, registry)
    return config


def _import_path(name: str, registry: Registry) -> str:
    """The dotted path of a registered component. A plugin's is imported now, so that a target that does not import
    is one line naming the plugin (jsonargparse would say "Expected a <class 'NoneType'>")."""
    component = registry.get(name)
    if component.source != CORE_SOURCE:
        registry.load(name)
    return component.import_path


#: Lightning classes a config names that the command builds as aipflow's subclass with the same options and state
#: (its ``save_last=True`` rewrites ``last.ckpt`` every epoch; Lightning 2.6's only on a top-k save)
UPGRADED_CLASS_PATHS = {
    "lightning.pytorch.callbacks.ModelCheckpoint": "aipflow.lightning.checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint": "aipflow.lightning.checkpoint.ModelCheckpoint",
    # the callbacks' homes before they moved under aipflow.lightning (configs earlier runs saved name them)
    "aipflow.sharpness.SharpnessMonitor": "aipflow.lightning.sharpness_monitor.SharpnessMonitor",
    "aipflow.callbacks.LabelNoiseMonitor": "aipflow.lightning.label_noise_monitor.LabelNoiseMonitor",
    "aipflow.callbacks.TransitionMatrixEstimation": "aipflow.lightning.transition_matrix.TransitionMatrixEstimation",
    "aipflow.lightning.sharpness.SharpnessAwareTraining": "aipflow.lightning.multi_pass.SharpnessAwareTraining",
}


def _resolve_class_path(value: str, field: str, registry: Registry) -> str:
    if value in registry:
        return _import_path(value, registry)
    if value in UPGRADED_CLASS_PATHS:
        return UPGRADED_CLASS_PATHS[value]
    if "." not in value:
        raise ConfigError(registry.unknown_name_message(value, field))
    failed = registry.failed_record_for_module(value)
    if failed is not None:
        raise ConfigError(f"{field}: {value!r} cannot be used: {failed.describe_failure()}")
    module = value.rsplit(".", 1)[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"{field}: cannot import {value!r}: no module named {module!r}")
    return value


def load_yaml(path: Path) -> Any:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None


def rewrite_argv(argv: list[str], registry: Registry | None = None) -> list[str]:
    """Resolve recipe names after ``--config``/``-c`` and short names in option values.

    A config whose short names or included files had to be rewritten is handed to LightningCLI as YAML text
    (jsonargparse reads ``--config`` values that are not files as config content): no temporary file is written,
    so none is left behind by an error or a kill -9.
    """
    registry = registry or get_registry()
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, value, inline = arg, None, False
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            inline = True
        elif arg.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            value = argv[i + 1]
        if value is None:
            out.append(arg)
            i += 1
            continue
        key = _legacy_data_key(key)
        if value in _NULLS and key.startswith("--") and key.count(".init_args.") >= 2:
            # jsonargparse 4.53 refuses `=null` for an argument of a component inside a component ("Does not
            # validate against any of the Union subtypes ... Expected a <class 'int'>"); the same setting as a
            # config at this position is read (later options still override it)
            nested: Any = None
            for part in reversed(key[2:].split(".")):
                nested = {part: nested}
            out.extend(["--config", yaml.safe_dump(nested, default_flow_style=True).strip()])
            i += 1 if inline else 2
            continue
        if key in ("--config", "-c"):
            value = prepared_config(value, registry)
        elif key.endswith(".class_path"):
            value = _resolve_class_path(value, key.lstrip("-"), registry)
        elif key.rsplit(".", 1)[-1].rstrip("+") in COMPONENT_KEYS and value in registry:
            value = _import_path(value, registry)
        out.extend([f"{key}={value}"] if inline else [key, value])
        i += 1 if inline else 2
    return out


_NULLS = ("null", "None", "~", "Null", "NULL")


def _is_inline_yaml(spec: str) -> bool:
    return "\n" in spec or spec.lstrip().startswith("{")


def prepared_config(spec: str, registry: Registry | None = None) -> str:
    """What ``--config`` receives: the recipe's path when it needs no rewriting, else the rewritten YAML text
    (short names resolved, included config files inlined)."""
    registry = registry or get_registry()
    if _is_inline_yaml(spec):
        try:
            raw, path, base = yaml.safe_load(spec), None, Path.cwd()
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config: the inline config is not valid YAML: {exc}") from None
    else:
        path = resolve_recipe(spec, registry)
        raw, base = load_yaml(path), path.parent
    if raw is None:
        return spec if path is None else str(path)
    if not isinstance(raw, dict):
        where = "the inline config" if path is None else str(path)
        raise ConfigError(f"--config: {where} must hold a mapping at the top level, got {type(raw).__name__}")
    rewritten = legacy_data_options(rewrite_short_names(inline_includes(raw, base), registry))
    if path is not None and rewritten == raw:
        return str(path)  # untouched: jsonargparse reads the file itself
    return yaml.safe_dump(rewritten, sort_keys=False)


def _legacy_groups() -> dict[str, dict[str, str]]:
    """The settings objects data modules take and, for each, the earlier flat options that mean its fields."""
    from aipflow.data.images import LEGACY_IMAGE_OPTIONS
    from aipflow.data.noise import LEGACY_NOISE_OPTIONS

    return {"label_noise": LEGACY_NOISE_OPTIONS, "images": LEGACY_IMAGE_OPTIONS}


def legacy_data_options(config: Any) -> Any:
    """A config whose data module takes the flat options of before its settings objects, with them as the
    objects' fields: the label-noise options (``noise``, ``noise_rate``, ...) as ``label_noise`` (``kind``,
    ``rate``, ...), the image options (``image_column``, ``image_size``, ``augment``, ...) as ``images``
    (``column``, ``size``, ``augment``, ...). Configs and recipes written for the earlier options, and the configs
    earlier runs saved, keep working. Image options without an ``image_column`` had no effect (the input was not
    images) and are left out, as before."""
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return config
    options = data.get("init_args") if isinstance(data.get("init_args"), dict) else data
    groups = {group: legacy for group, legacy in _legacy_groups().items() if any(k in options for k in legacy)}
    if not groups:
        return config
    moved = {k: v for k, v in options.items() if not any(k in legacy for legacy in groups.values())}
    for group, legacy in groups.items():
        if group == "images" and options.get("image_column") is None:
            continue  # not an image input: the flat image options never applied
        fields = dict(moved.get(group) or {})
        fields.update({legacy[k]: v for k, v in options.items() if k in legacy})
        moved[group] = fields
    data = {**data, "init_args": moved} if options is not data else moved
    return {**config, "data": data}


def _legacy_data_key(key: str) -> str:
    """``--data.noise_rate`` / ``--data.init_args.image_size`` -> ``--data[.init_args].label_noise.rate`` /
    ``--data.init_args.images.size``."""
    head, _, last = key.rpartition(".")
    if head in ("--data", "--data.init_args"):
        for group, legacy in _legacy_groups().items():
            if last in legacy:
                return f"{head}.{group}.{legacy[last]}"
    return key


#: keys whose value may name another config file (``data: data.yaml``)
INCLUDE_KEYS = COMPONENT_KEYS | {"trainer"}


def inline_includes(config: Any, base: Path, where: str = "", seen: tuple[Path, ...] = ()) -> Any:
    """Replace every included config file (a ``.yaml`` / ``.yml`` string under a component key or ``trainer``) by
    its content, read relative to the file that includes it (as jsonargparse does for a config given by path),
    recursively; a missing or circular include is an error naming the field and the file."""
    if isinstance(config, list):
        return [inline_includes(v, base, f"{where}[{i}]", seen) for i, v in enumerate(config)]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        field = f"{where}.{key}" if where else str(key)
        if key in INCLUDE_KEYS and isinstance(value, str) and value.endswith((".yaml", ".yml")):
            path = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
            if not path.is_file():
                raise ConfigError(f"{field}: {value!r}: no such file (read relative to {base})")
            if path in seen:
                raise ConfigError(f"{field}: {value!r} includes itself (through {' -> '.join(map(str, seen))})")
            value = inline_includes(load_yaml(path), path.parent, field, (*seen, path))
        else:
            value = inline_includes(value, base, field, seen)
        out[key] = value
    return out
