"""Discovery (entry points, never a component's import) and the registry (short name -> component) over the core's
catalogue and every compatible plugin."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from aipflow.plugins.catalogue import CORE
from aipflow.plugins.contract import (
    CORE_COMMANDS,
    CORE_SOURCE,
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    ONLY_PLUGINS_ENV,
    Component,
    Plugin,
    PluginError,
    PluginRecord,
    is_compatible,
)

__all__ = ["Registry", "discover", "get_registry", "reset_registry"]


def _only_plugins() -> set[str] | None:
    raw = os.environ.get(ONLY_PLUGINS_ENV, "").strip()
    return {p.strip() for p in raw.split(",") if p.strip()} if raw else None


def discover(distributions: Iterable[metadata.Distribution] | None = None) -> list[PluginRecord]:
    """Load every ``aipflow.plugins`` entry point; never raises for a bad plugin, records it instead."""
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0", "false", "False"):
        return []
    records: list[PluginRecord] = []
    seen: set[tuple[str, str]] = set()
    for dist in distributions if distributions is not None else metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or (dist_name, ep.name) in seen:
                continue
            seen.add((dist_name, ep.name))  # the same dist can be on sys.path twice (editable + site)
            records.append(_load_entry_point(ep, dist_name, dist.version))
    only = _only_plugins()
    if only is not None:
        known = {r.name for r in records} | {r.entry_point for r in records}
        unknown = sorted(only - known)
        if unknown:
            raise PluginError(
                f"{ONLY_PLUGINS_ENV} names unknown plugin(s) {unknown}; installed plugins: {sorted(known) or 'none'}"
            )
        records = [r for r in records if r.name in only or r.entry_point in only]
    return sorted(records, key=lambda r: r.name)


def _load_entry_point(ep: metadata.EntryPoint, dist_name: str, version: str) -> PluginRecord:
    modules = (ep.value.split(":")[0].split(".")[0],)
    record = PluginRecord(ep.name, dist_name, version, status="broken", modules=modules)
    try:
        obj = ep.load()
        plugin = obj() if callable(obj) and not isinstance(obj, Plugin) else obj
        if not isinstance(plugin, Plugin):
            raise PluginError(f"entry point {ep.value!r} gave {type(plugin).__name__}, expected aipflow.plugins.Plugin")
    except Exception as exc:  # a broken plugin never takes the core down
        record.error = f"{type(exc).__name__}: {exc}"
        return record
    record.plugin = plugin
    record.status = "ok" if is_compatible(plugin.api_version) else "incompatible"
    return record


class Registry:
    """Short name -> component, over the core and every compatible plugin.

    Names: every plugin component is reachable as ``plugin:Name`` (qualified). The unqualified ``Name`` means the
    core's component when the core has one (a plugin never shadows the core); otherwise the plugin's, unless two
    plugins declare it, in which case it is ambiguous and using it is an error naming the qualified forms. Each
    such clash is reported by ``aipflow plugins`` and fails ``aipflow plugins --check``."""

    def __init__(self, plugins: Iterable[Plugin], records: Iterable[PluginRecord] = ()) -> None:
        self.records = list(records)
        self.plugins = list(plugins)
        self._components: dict[str, Component] = {}
        self._qualified: dict[str, Component] = {}
        self._ambiguous: dict[str, list[str]] = {}
        self._clashes: dict[str, list[str]] = {}
        self._commands: dict[str, Component] = {}
        self._ambiguous_commands: set[str] = set()
        for plugin in self.plugins:
            source = CORE_SOURCE if plugin.name == CORE_SOURCE else plugin.name
            self._add_commands(plugin, source)
            for name, target in plugin.components.items():
                component = Component(name, target, source)
                if source != CORE_SOURCE:
                    self._qualified[f"{source}:{name}"] = component
                other = self._components.get(name)
                if other is None and name not in self._ambiguous:
                    self._components[name] = component
                    continue
                if other is not None and other.source == CORE_SOURCE:
                    self._clashes.setdefault(source, []).append(
                        f"component {name!r} has a core name: the core's is used; this one only as '{source}:{name}'"
                    )
                    continue
                holders = self._ambiguous.setdefault(name, [f"{other.source}:{name}"] if other else [])
                holders.append(f"{source}:{name}")
                self._components.pop(name, None)
                for holder in holders:
                    owner = holder.split(":")[0]
                    message = f"component {name!r} is also declared by another plugin: use {' or '.join(holders)}"
                    self._clashes[owner] = [m for m in self._clashes.get(owner, []) if f"{name!r}" not in m]
                    self._clashes[owner].append(message)

    def _add_commands(self, plugin: Plugin, source: str) -> None:
        for name, target in plugin.commands.items():
            if name in CORE_COMMANDS:
                self._clashes.setdefault(source, []).append(f"command {name!r} is a core command: not available")
            elif name in self._commands:
                other = self._commands.pop(name).source
                for owner in (other, source):
                    self._clashes.setdefault(owner, []).append(
                        f"command {name!r} is declared by {other} and {source}: neither is available"
                    )
                self._ambiguous_commands.add(name)
            elif name not in self._ambiguous_commands:
                self._commands[name] = Component(name, target, source)

    def command(self, name: str) -> Component | None:
        """The plugin command called ``name`` (None when no plugin declares it, or two do)."""
        return self._commands.get(name)

    def command_names(self, source: str | None = None) -> list[str]:
        return sorted(n for n, c in self._commands.items() if source is None or c.source == source)

    @property
    def conflicts(self) -> list[str]:
        """Every clash, as ``plugin: message`` lines."""
        return [f"{plugin}: {message}" for plugin, messages in sorted(self._clashes.items()) for message in messages]

    def clashes_of(self, plugin: str) -> list[str]:
        return list(self._clashes.get(plugin, []))

    def __contains__(self, name: str) -> bool:
        return name in self._components or name in self._qualified or name in self._ambiguous

    def names(self, source: str | None = None) -> list[str]:
        return sorted(n for n, c in self._components.items() if source is None or c.source == source)

    def get(self, name: str) -> Component:
        if name in self._components:
            return self._components[name]
        if name in self._qualified:
            return self._qualified[name]
        if name in self._ambiguous:
            raise PluginError(
                f"component {name!r} is declared by several plugins: use {' or '.join(self._ambiguous[name])}"
            )
        raise PluginError(self.unknown_name_message(name))

    def load(self, name: str):
        """The object behind a component name; a target that does not import names the plugin, its version, the
        target and the import error."""
        component = self.get(name)
        try:
            return component.load()
        except Exception as exc:  # noqa: BLE001 - whatever the plugin's module raises, said in one line
            if component.source == CORE_SOURCE:
                raise
            record = next((r for r in self.records if r.name == component.source), None)
            version = f" {record.distribution} {record.version}" if record is not None else ""
            raise PluginError(
                f"plugin '{component.source}'{version}: component {component.name!r} -> {component.target!r} does "
                f"not import: {type(exc).__name__}: {exc}"
            ) from exc

    def unknown_name_message(self, name: str, field_name: str | None = None) -> str:
        where = f"{field_name}: " if field_name else ""
        known = list(self._components) + list(self._qualified)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        close += [n for n in known if n.lower() == name.lower() and n not in close]
        msg = f"{where}unknown component {name!r}"
        msg += f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; see `aipflow plugins`"
        failed = self.failed_records()
        if failed:
            msg += " It may belong to a plugin that is not loaded: " + "; ".join(r.describe_failure() for r in failed)
        return msg

    def failed_records(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status != "ok"]

    def failed_record_for_module(self, dotted: str) -> PluginRecord | None:
        top = dotted.split(".")[0]
        return next((r for r in self.failed_records() if top in r.modules), None)

    def recipes_problem(self, plugin: Plugin) -> str | None:
        """Why a plugin's declared recipes folder gives no recipes (``None`` when it does, or none is declared)."""
        if not plugin.recipes:
            return None
        try:
            folder = _resolve_folder(plugin.recipes)
        except Exception as exc:  # noqa: BLE001
            return f"plugin '{plugin.name}': recipes {plugin.recipes!r} cannot be located: {type(exc).__name__}: {exc}"
        if not folder.is_dir() or not any(folder.glob("*.yaml")):
            what = "has no *.yaml files" if folder.is_dir() else "does not exist"
            return (
                f"plugin '{plugin.name}': its recipes folder {folder} {what} (a non-editable install ships it only "
                'with package data: [tool.setuptools.package-data] "<package>" = ["recipes/*.yaml"])'
            )
        return None

    def recipe_dirs(self) -> list[tuple[str, Path]]:
        out = []
        for plugin in self.plugins:
            if plugin.recipes and self.recipes_problem(plugin) is None:
                out.append((plugin.name, _resolve_folder(plugin.recipes)))
        return out


def _resolve_folder(spec: str) -> Path:
    if ":" in spec and not Path(spec).exists():
        package, _, folder = spec.partition(":")
        module = importlib.import_module(package)
        return Path(module.__file__).parent / folder
    return Path(spec)


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The registry of this process: the core plus every compatible discovered plugin (cached)."""
    records = discover()
    plugins = [CORE] + [r.plugin for r in records if r.status == "ok"]
    return Registry(plugins, records)


def reset_registry() -> None:
    """Forget the cached registry (after installing a plugin in-process, or in tests)."""
    get_registry.cache_clear()
