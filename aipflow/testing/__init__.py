"""Testing aipflow plugins: a temporary site to install plugins into, and the conformance suite every plugin should
pass (weaksup and every in-tree plugin run it in CI; ``aipflow plugin new`` writes a plugin whose tests use it).

In a plugin's top-level ``conftest.py`` (beside its pyproject.toml), the fixtures::

    pytest_plugins = ["aipflow.testing"]

and in a test module::

    from aipflow.testing import PluginConformance

    class TestConformance(PluginConformance):
        plugin = "demo"                        # the Plugin.name

The suite checks, on the installed plugin: it is discovered, loads and declares a compatible api version; every
component target imports and is a class or a factory; its short names do not collide with the core's or another
plugin's; it has recipes (when it declares a folder) and each parses (``--print_config``); discovering it imports
nothing heavy; each recipe fits two steps on its own data; a run resumed from ``last.ckpt`` equals the
uninterrupted one bit for bit; and (marked ``slow``) a recipe fits on two processes (``ddp_fork``).

``check_plugin`` is what ``aipflow plugins --check`` runs: the static part (no training), one line per problem.

Importing this module needs no pytest (``aipflow plugins --check`` and plugin commands use it in a plain install):
the fixture and the suite (:mod:`aipflow.testing._pytest`) come with it when pytest has loaded it as a plugin, and
otherwise on first use of their names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from aipflow.cli.check import check_plugin, plugin_recipes
from aipflow.plugins import ENTRY_POINT_GROUP, PluginError

__all__ = [
    "CPUDeepSpeedStrategy",
    "CPUFSDPStrategy",
    "ForkedModelParallelStrategy",
    "HEAVY_MODULES",
    "PluginConformance",
    "check_plugin",
    "fit_recipe",
    "install_distribution",
    "plugin_recipes",
    "plugin_site",
    "quiet_trainer",
]

if TYPE_CHECKING:  # imported on first use (module __getattr__ below): they import Lightning, or pytest
    from aipflow._cpu_strategies import CPUDeepSpeedStrategy, CPUFSDPStrategy, ForkedModelParallelStrategy
    from aipflow.testing._pytest import PluginConformance, plugin_site

_CPU_STRATEGIES = ("CPUDeepSpeedStrategy", "CPUFSDPStrategy", "ForkedModelParallelStrategy")
_PYTEST_PARTS = ("PluginConformance", "plugin_site")


def __getattr__(name: str):
    """Lightning's FSDP, FSDP2 and DeepSpeed strategies made to run on CPU processes (fork, gloo) to test
    distributed behaviour without GPUs, and the pytest parts (the suite, the fixture); imported on first use."""
    if name in _CPU_STRATEGIES:
        from aipflow import _cpu_strategies

        return getattr(_cpu_strategies, name)
    if name in _PYTEST_PARTS:
        from aipflow.testing import _pytest  # needs pytest (the test extra)

        return getattr(_pytest, name)
    raise AttributeError(f"module 'aipflow.testing' has no attribute {name!r}")


#: modules a plugin's discovery (importing its entry point) must not import: each costs seconds at every command
HEAVY_MODULES = ("torch", "lightning", "pytorch_lightning", "transformers", "datasets", "sklearn", "timm", "scipy")

#: what a conformance fit adds to a recipe: a couple of steps, quiet, nothing written outside the test's folder
SHORT_RUN = (
    "--trainer.max_steps=2",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)


# ------------------------------------------------------------------------------------------ a temporary site
def install_distribution(
    site: Path, dist: str, version: str, module: str, source: str, entry_point: str, files: dict[str, str] | None = None
) -> Path:
    """Install a real (if minimal) distribution into the folder ``site``: the package ``module`` (its
    ``__init__.py`` is ``source``; ``files`` adds more, by path inside the package) and a dist-info with its entry
    point, exactly what ``importlib.metadata`` reads for a pip-installed package. Returns the package folder."""
    package = Path(site) / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    for relative, text in (files or {}).items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    info = Path(site) / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point} = {module}:plugin\n")
    (info / "top_level.txt").write_text(module + "\n")
    return package


def discovery_imports(name: str) -> list[str]:
    """The heavy modules (:data:`HEAVY_MODULES`) that discovering plugin ``name`` imports, in a fresh process."""
    code = textwrap.dedent(
        f"""
        import sys
        from aipflow.plugins import discover
        before = set(sys.modules)
        records = [r for r in discover() if r.name == {name!r}]
        new = {{m.split(".")[0] for m in set(sys.modules) - before}}
        print(sorted(new & set({HEAVY_MODULES!r})) if records else "not-found")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
    if done.returncode != 0 or done.stdout.strip() == "not-found":
        raise PluginError(f"discovering plugin {name!r} in a new process failed: {done.stderr.strip()[-500:]}")
    return eval(done.stdout.strip())  # noqa: S307 - our own printed list of module names


def quiet_trainer(**options):
    """A Lightning ``Trainer`` for tests: CPU, deterministic, no logger, progress bar, model summary or
    checkpointing, and a fresh temporary ``default_root_dir`` (what a run writes without a logger, a test's
    reliability diagram say, never lands in the working directory); ``options`` add to or override these
    (``max_epochs``, ``callbacks``, ``precision``, ``default_root_dir``, ...)."""
    import tempfile

    import lightning as L

    defaults = dict(
        default_root_dir=options.get("default_root_dir") or tempfile.mkdtemp(prefix="aipflow-quiet-trainer-"),
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    return L.Trainer(**{**defaults, **options})


def fit_recipe(recipe: str, root: Path, *options: str) -> int:
    """``aipflow fit --config RECIPE`` for two steps, in this process, writing under ``root``; its exit code.
    ``options`` override (``--trainer.max_epochs=2``, a strategy, ...)."""
    from aipflow.cli import main

    argv = ["fit", "--config", recipe, *SHORT_RUN, f"--trainer.default_root_dir={root}", "--trainer.logger=false"]
    return main([*argv, "--test_after_fit=false", *options])


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


if "pytest" in sys.modules:  # loaded by pytest (pytest_plugins = ["aipflow.testing"]): register its fixtures
    from aipflow.testing._pytest import PluginConformance, plugin_site  # noqa: E402, F401
