"""The plugin contract, entry-point discovery and the component registry.

Contract, version ``PLUGIN_API_VERSION`` (major.minor). A plugin is a distribution that declares an entry point
in the group ``aipflow.plugins``; the entry point names a :class:`Plugin` instance (or a zero-argument callable
returning one)::

    # pyproject.toml of the plugin
    [project.entry-points."aipflow.plugins"]
    weaksup = "aipflow_weaksup:plugin"

    # aipflow_weaksup/__init__.py
    from aipflow.plugins import Plugin
    plugin = Plugin(
        name="weaksup",
        api_version="1.0",
        components={"PURisk": "aipflow_weaksup.risks.pu:PURisk"},  # short name -> "module:attribute"
        recipes="aipflow_weaksup:recipes",                          # optional: package folder of *.yaml recipes
    )

A plugin is *compatible* when its major api version equals the core's and its minor version is not newer. The
core registers its own components through the same :class:`Plugin` type (``aipflow.plugins.catalogue.CORE``).

Discovery (:func:`discover`) is separate from use (:class:`Registry`): discovering never imports a component's
module, and nothing a plugin declares is added to a run unless a recipe names it. A plugin that fails to load or
declares an incompatible api version is recorded with its status and skipped.
"""

from aipflow.plugins.contract import (
    CORE_COMMANDS,
    CORE_SOURCE,
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    ONLY_PLUGINS_ENV,
    PLUGIN_API_VERSION,
    Component,
    Plugin,
    PluginError,
    PluginRecord,
    is_compatible,
)
from aipflow.plugins.registry import Registry, discover, get_registry, reset_registry

__all__ = [
    "CORE_SOURCE",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "CORE_COMMANDS",
    "ONLY_PLUGINS_ENV",
    "PLUGIN_API_VERSION",
    "Component",
    "Plugin",
    "PluginError",
    "PluginRecord",
    "Registry",
    "discover",
    "get_registry",
    "is_compatible",
    "reset_registry",
]
