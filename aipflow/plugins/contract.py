"""The plugin contract: what a plugin declares (:class:`Plugin`), the api version it is checked against, and the
error type every plugin problem is reported with. Imports nothing of aipflow: the core's catalogue and the
registry build on it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CORE_COMMANDS",
    "CORE_SOURCE",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "ONLY_PLUGINS_ENV",
    "PLUGIN_API_VERSION",
    "Component",
    "Plugin",
    "PluginError",
    "PluginRecord",
    "is_compatible",
]

# 1.1: Plugin.commands; 1.2: ClassificationTask.per_example_loss, aipflow.sharpness, SGLD / PSGLD;
# 1.3: aipflow.optim.functional (the step functions), aipflow.optim.OptionError, SAM's base options as keywords;
# 1.4: aipflow.tasks.Task (the one task base), aipflow.lightning.default_callbacks / command_callbacks,
# aipflow.data.LabelNoise (data modules' label_noise), aipflow.data.RowDataset, aipflow.models.create_timm_model;
# 1.5: aipflow.data.ImageOptions (HFDataModule's images); every callback in aipflow.lightning (LabelNoiseMonitor,
# SharpnessMonitor, TransitionMatrixEstimation, out_of_fold_posteriors); aipflow.callbacks and
# aipflow.sharpness.SharpnessMonitor deprecated (they warn; gone in 2.0); aipflow.label_issues, aipflow.review,
# LabelIssuePruning / IssueSearch / search_label_issues, data modules' exclude_rows / relabel (aipflow.data.curation)
PLUGIN_API_VERSION = "1.5"
#: the ``aipflow`` subcommands of the core: a plugin command cannot take these names
CORE_COMMANDS = frozenset({"fit", "validate", "test", "predict", "plugins", "plugin", "recipes", "env", "find-issues"})
ENTRY_POINT_GROUP = "aipflow.plugins"
DISABLE_AUTOLOAD_ENV = "AIPFLOW_DISABLE_PLUGIN_AUTOLOAD"
ONLY_PLUGINS_ENV = "AIPFLOW_PLUGINS"

CORE_SOURCE = "aipflow"


class PluginError(Exception):
    """A plugin, or a component name, that cannot be used; the message says why and what is valid."""


@dataclass(frozen=True)
class Plugin:
    """What a plugin declares: its name, the api version it was written for, its components and recipes.

    ``components`` maps a short name (usable as ``class_path`` in YAML) to ``"module:attribute"`` or to the
    object itself. ``recipes`` is ``"package:folder"`` (or a path) holding ``*.yaml`` recipes. ``commands`` (api
    1.1) maps a subcommand of ``aipflow`` to ``"module:function"``: ``aipflow NAME ARGS...`` calls
    ``function(list_of_args)``, which returns the exit code; errors it raises are reported in one line like the
    core's (``ValueError``: bad input, exit 2). A command may not take a core command's name.
    """

    name: str
    api_version: str
    components: Mapping[str, str | type | Callable] = field(default_factory=dict)
    recipes: str | None = None
    commands: Mapping[str, str | Callable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise PluginError(f"Plugin.name must be a non-empty string, got {self.name!r}")
        _parse_version(self.api_version, "Plugin.api_version")


@dataclass
class PluginRecord:
    """One discovered plugin: where it came from and whether it can be used."""

    entry_point: str
    distribution: str
    version: str
    status: str  # "ok" | "broken" | "incompatible"
    plugin: Plugin | None = None
    error: str | None = None
    modules: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.plugin.name if self.plugin is not None else self.entry_point

    def describe_failure(self) -> str:
        what = f"plugin '{self.name}' from distribution {self.distribution} {self.version}"
        if self.status == "incompatible":
            return (
                f"{what} is incompatible: it requires plugin api {self.plugin.api_version}, "
                f"aipflow provides {PLUGIN_API_VERSION}"
            )
        return f"{what} failed to load: {self.error}"


@dataclass(frozen=True)
class Component:
    name: str
    target: str | type | Callable
    source: str  # CORE_SOURCE or the plugin's name

    @property
    def import_path(self) -> str:
        """The dotted path jsonargparse and LightningCLI take as ``class_path``."""
        if isinstance(self.target, str):
            return self.target.replace(":", ".")
        return f"{self.target.__module__}.{self.target.__qualname__}"

    def load(self):
        if not isinstance(self.target, str):
            return self.target
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def _parse_version(value: str, what: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in str(value).split(".")[:2])
    except ValueError:
        raise PluginError(f"{what} must look like 'MAJOR.MINOR', got {value!r}") from None
    return major, minor


def is_compatible(api_version: str) -> bool:
    major, minor = _parse_version(api_version, "api_version")
    core_major, core_minor = _parse_version(PLUGIN_API_VERSION, "PLUGIN_API_VERSION")
    return major == core_major and minor <= core_minor
