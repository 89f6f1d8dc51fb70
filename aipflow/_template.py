"""``aipflow plugin new NAME``: a complete plugin distribution from the templates in ``_plugin_template/`` (package
data), with ``$name``, ``$api_version`` and aipflow's version range filled in."""

from __future__ import annotations

import keyword
import re
from importlib import metadata
from pathlib import Path
from string import Template

from aipflow.plugins import PLUGIN_API_VERSION, PluginError

TEMPLATES = Path(__file__).with_name("_plugin_template")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def aipflow_range() -> tuple[str, str]:
    """The dependency range a plugin written against this aipflow declares: this major.minor up to the next
    major (for 0.x, up to 1: the plugin api version, not the package's, says what stays compatible)."""
    try:
        version = metadata.version("aipflow")
    except metadata.PackageNotFoundError:
        version = "0.1.0"
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    return f"{major}.{minor}", str(major + 1)


def render(name: str) -> dict[str, str]:
    """Relative path -> text of every file of plugin ``name``."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise PluginError(f"plugin name {name!r}: use lowercase letters, digits and _ (a Python identifier)")
    low, high = aipflow_range()
    values = {"name": name, "api_version": PLUGIN_API_VERSION, "aipflow_min": low, "aipflow_next_major": high}
    files = {}
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATES).with_suffix("")  # drop .tmpl
        parts = [f"aipflow_{name}" if part == "package" else part for part in relative.parts]
        files[str(Path(*parts))] = Template(template.read_text()).substitute(values)
    return files


def write_plugin(name: str, parent: Path) -> Path:
    """Write plugin ``name`` into ``parent/name``; refuses to overwrite an existing folder."""
    folder = Path(parent) / name
    if folder.exists():
        raise PluginError(f"{folder} exists already: choose another name or --dir")
    for relative, text in render(name).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
