"""Text reports for ``aipflow plugins``, ``aipflow recipes`` and ``aipflow env`` (no Lightning import)."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import sys

from aipflow.plugins import PLUGIN_API_VERSION, get_registry


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def plugins_report() -> str:
    registry = get_registry()
    lines = [f"plugin api {PLUGIN_API_VERSION}; entry-point group 'aipflow.plugins'"]
    core = registry.names("aipflow")
    lines.append(f"core  aipflow {_version('aipflow')}  ok  components: {', '.join(core)}")
    if not registry.records:
        lines.append("no plugins installed (or AIPFLOW_DISABLE_PLUGIN_AUTOLOAD is set)")
    for rec in registry.records:
        head = f"{rec.name:<12} {rec.distribution} {rec.version}"
        if rec.status == "ok":
            comps = registry.names(rec.name)
            problem = registry.recipes_problem(rec.plugin)
            recipes = f"\n  {problem}" if problem else (" +recipes" if rec.plugin.recipes else "")
            commands = registry.command_names(rec.name)
            recipes += f"  commands: {', '.join(commands)}" if commands else ""
            lines.append(f"{head}  api {rec.plugin.api_version}  ok  components: {', '.join(comps) or '-'}{recipes}")
        elif rec.status == "incompatible":
            lines.append(f"{head}  incompatible: requires api {rec.plugin.api_version}, found {PLUGIN_API_VERSION}")
        else:
            lines.append(f"{head}  broken: {rec.error}")
    for conflict in registry.conflicts:
        lines.append(f"name clash: {conflict}")
    return "\n".join(lines)


def recipes_report() -> str:
    from aipflow.config import list_recipes

    recipes = list_recipes()
    if not recipes:
        return "no recipes found"
    width = max(len(n) for n in recipes)
    lines = ["recipes (use with `aipflow fit --config NAME`):"]
    for name, path in sorted(recipes.items()):
        lines.append(f"  {name:<{width}}  {_first_comment(path)}  [{path}]")
    return "\n".join(lines)


def _first_comment(path) -> str:
    with open(path) as fh:
        for line in fh:
            if line.startswith("#"):
                return line.lstrip("# ").strip()
    return ""


def env_report() -> str:
    lines = [
        f"aipflow      {_version('aipflow')}  (plugin api {PLUGIN_API_VERSION})",
        f"python       {sys.version.split()[0]}  ({platform.platform()})",
    ]
    for dist in ("torch", "lightning", "torchmetrics", "triton", "timm", "jsonargparse", "datasets", "numpy"):
        lines.append(f"{dist:<12} {_version(dist)}")
    try:
        import torch

        lines.append(f"cuda         {torch.version.cuda or 'none'} (available: {torch.cuda.is_available()})")
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(
                f"  gpu {i}      {props.name}, {props.total_memory / 2**30:.1f} GiB, sm_{props.major}{props.minor}"
            )
        lines.append(f"cpu threads  {torch.get_num_threads()}")
    except Exception as exc:  # env must print even with a broken torch
        lines.append(f"torch import failed: {exc}")
    lines.append("plugins:")
    lines.extend("  " + line for line in plugins_report().splitlines())
    return "\n".join(lines)
