"""``aipflow plugins --check``: what can be known of an installed plugin without training it (loading, api version,
each component's import and kind, name clashes, the recipes folder, each recipe through the command's parser).
The plugin authors' kit (:mod:`aipflow.testing`) runs the same checks in its conformance suite."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout

from aipflow.plugins import ENTRY_POINT_GROUP, Component, PluginError, PluginRecord, Registry, get_registry

__all__ = ["check_plugin", "plugin_record", "plugin_recipes"]


def plugin_record(name: str, registry: Registry | None = None) -> PluginRecord:
    """The discovery record of the installed plugin ``name`` (its name or entry point)."""
    registry = registry or get_registry()
    for record in registry.records:
        if name in (record.name, record.entry_point):
            return record
    installed = sorted(r.name for r in registry.records) or "none"
    raise PluginError(f"plugin {name!r} is not installed (entry-point group {ENTRY_POINT_GROUP!r}; found: {installed})")


def plugin_recipes(name: str, registry: Registry | None = None) -> list[str]:
    """The plugin's recipe names as ``--config`` takes them (``plugin/recipe``)."""
    from aipflow.config import list_recipes

    registry = registry or get_registry()
    return sorted(n for n in list_recipes(registry) if n.startswith(f"{name}/"))


def check_plugin(name: str, parse_recipes: bool = True) -> list[str]:
    """Problems of the installed plugin ``name`` found without training, one line each (empty: none): loading, api
    version, every component's import and kind, name clashes, the recipes folder, and (``parse_recipes``) each
    recipe through the command's parser."""
    registry = get_registry()
    record = plugin_record(name, registry)
    if record.status != "ok":
        return [record.describe_failure()]
    plugin = record.plugin
    problems = [f"plugin '{plugin.name}': {clash}" for clash in registry.clashes_of(plugin.name)]
    for short_name in plugin.components:
        try:
            obj = registry.load(f"{plugin.name}:{short_name}")
        except PluginError as exc:
            problems.append(str(exc))
            continue
        if not callable(obj):
            problems.append(
                f"plugin '{plugin.name}' component {short_name!r} -> {plugin.components[short_name]!r} is a "
                f"{type(obj).__name__}, not a class or a factory"
            )
    for command, target in plugin.commands.items():
        try:
            loaded = Component(command, target, plugin.name).load()
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's problem, reported
            problems.append(f"plugin '{plugin.name}' command {command!r} -> {target!r} does not import: {exc}")
            continue
        if not callable(loaded):
            problems.append(f"plugin '{plugin.name}' command {command!r} -> {target!r} is not a function")
    problem = registry.recipes_problem(plugin)
    if problem:
        problems.append(problem)
    elif parse_recipes and plugin.recipes:
        for recipe in plugin_recipes(plugin.name, registry):
            error = _parse_recipe(recipe)
            if error:
                problems.append(f"plugin '{plugin.name}' recipe {recipe!r} does not parse: {error}")
    return problems


def _parse_recipe(recipe: str) -> str | None:
    """``aipflow fit --config RECIPE --print_config`` in this process, and the printed config parsed again to the
    same print (a round trip: what a user saves with --print_config runs as it ran); ``None``, or the error line."""
    import tempfile

    first, error = _print_config(["--config", recipe])
    if error:
        return error
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(first)
    try:
        second, error = _print_config(["--config", fh.name])
    finally:
        os.unlink(fh.name)
    if error:
        return f"its --print_config output does not parse again: {error}"
    return None if second == first else "its --print_config output prints differently when parsed again"


def _print_config(options: list[str]) -> tuple[str, str | None]:
    """``aipflow fit OPTIONS --print_config`` in this process: the printed config, or the error as the command
    would report it (its last line)."""
    from aipflow.cli.errors import describe
    from aipflow.cli.run import run

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            run(["fit", *options, "--print_config"])
    except SystemExit as exc:  # --print_config exits after printing; argparse exits after its own message
        if exc.code in (0, None):
            return out.getvalue(), None
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        return "", (lines[-1] if lines else f"exit code {exc.code}")
    except Exception as exc:  # noqa: BLE001 - any error is the recipe's problem, reported as the command would
        return "", describe(exc).splitlines()[-1]
    return "", "--print_config printed nothing and did not exit"
