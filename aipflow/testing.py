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
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aipflow.plugins import (
    ENTRY_POINT_GROUP,
    Component,
    PluginError,
    PluginRecord,
    Registry,
    get_registry,
    reset_registry,
)

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

if TYPE_CHECKING:  # imported on first use (module __getattr__ below): they import Lightning
    from aipflow._cpu_strategies import CPUDeepSpeedStrategy, CPUFSDPStrategy, ForkedModelParallelStrategy

_CPU_STRATEGIES = ("CPUDeepSpeedStrategy", "CPUFSDPStrategy", "ForkedModelParallelStrategy")


def __getattr__(name: str):
    """Lightning's FSDP, FSDP2 and DeepSpeed strategies made to run on CPU processes (fork, gloo) to test
    distributed behaviour without GPUs; imported on first use (they import Lightning)."""
    if name in _CPU_STRATEGIES:
        from aipflow import _cpu_strategies

        return getattr(_cpu_strategies, name)
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


@pytest.fixture
def plugin_site(tmp_path, monkeypatch) -> Iterator[Callable[..., Path]]:
    """A temporary site folder on ``sys.path``; call it like :func:`install_distribution` (without ``site``) to
    install a plugin there. The registry is rebuilt before and after, and the plugin's modules are forgotten."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("AIPFLOW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("AIPFLOW_PLUGINS", raising=False)
    installed: list[str] = []

    def install(dist: str, version: str, module: str, source: str, entry_point: str, files=None) -> Path:
        package = install_distribution(site, dist, version, module, source, entry_point, files)
        installed.append(module)
        importlib.invalidate_caches()
        reset_registry()
        return package

    reset_registry()
    yield install
    for name in [m for m in sys.modules if any(m == i or m.startswith(i + ".") for i in installed)]:
        del sys.modules[name]
    reset_registry()


# ------------------------------------------------------------------------------------------------ the checks
def _record(name: str, registry: Registry) -> PluginRecord:
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
    record = _record(name, registry)
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
    from aipflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["fit", *options, "--print_config"])
    if code == 0:
        return out.getvalue(), None
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith("(add --debug")]
    return "", (lines[-1].removeprefix("aipflow: error: ") if lines else f"exit code {code}")


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
    checkpointing; ``options`` add to or override these (``max_epochs``, ``callbacks``, ``precision``, ...)."""
    import lightning as L

    defaults = dict(
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


# ------------------------------------------------------------------------------------------ the suite
class PluginConformance:
    """Subclass as ``TestSomething`` with ``plugin = "<Plugin.name>"``. ``fit_recipes`` limits the recipes that
    are trained (default: all); ``resume_recipe`` is the one resumed (default: the first)."""

    plugin: str = ""
    fit_recipes: tuple[str, ...] | None = None
    resume_recipe: str | None = None

    @pytest.fixture(autouse=True)
    def _offline(self, monkeypatch):
        for key, value in _env().items():
            if key.endswith("OFFLINE"):
                monkeypatch.setenv(key, value)

    def _recipes(self) -> list[str]:
        recipes = plugin_recipes(self.plugin)
        return [
            r
            for r in recipes
            if self.fit_recipes is None or r in self.fit_recipes or r.split("/", 1)[1] in self.fit_recipes
        ]

    def test_discovered_loads_and_is_compatible(self):
        record = _record(self.plugin, get_registry())
        assert record.status == "ok", record.describe_failure()

    def test_static_checks(self):
        # components import and are classes / factories, no name clash, recipes present and parsing
        problems = check_plugin(self.plugin)
        assert not problems, "\n".join(problems)

    def test_discovery_imports_nothing_heavy(self):
        heavy = discovery_imports(self.plugin)
        assert not heavy, f"discovering plugin {self.plugin!r} imports {heavy}: import them inside the components"

    def test_each_recipe_fits_two_steps(self, tmp_path):
        failed = [r for r in self._recipes() if fit_recipe(r, tmp_path / r.replace("/", "_")) != 0]
        assert not failed, f"these recipes did not fit two steps: {failed} (run one with aipflow fit --config)"

    def test_resume_equals_the_uninterrupted_run(self, tmp_path):
        import torch

        recipes = self._recipes()
        if not recipes:
            pytest.skip(f"plugin {self.plugin!r} ships no recipes")
        recipe = self.resume_recipe or recipes[0]
        two_epochs = ("--trainer.max_steps=-1", "--trainer.max_epochs=2")
        assert fit_recipe(recipe, tmp_path / "straight", *two_epochs) == 0
        assert fit_recipe(recipe, tmp_path / "first", "--trainer.max_steps=-1", "--trainer.max_epochs=1") == 0
        first_last = tmp_path / "first" / "checkpoints" / "last.ckpt"
        assert fit_recipe(recipe, tmp_path / "first", *two_epochs, f"--ckpt_path={first_last}") == 0
        straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
        resumed = torch.load(first_last, weights_only=True)
        assert (resumed["epoch"], resumed["global_step"]) == (straight["epoch"], straight["global_step"])
        straight, resumed = straight["state_dict"], resumed["state_dict"]
        assert straight.keys() == resumed.keys()
        different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
        assert not different, f"{recipe}: resumed from last.ckpt differs from the uninterrupted run in {different}"

    @pytest.mark.slow
    def test_fits_on_two_processes(self, tmp_path):
        recipes = self._recipes()
        if not recipes:
            pytest.skip(f"plugin {self.plugin!r} ships no recipes")
        ddp = ("--trainer.strategy=ddp_fork", "--trainer.devices=2", "--trainer.accelerator=cpu")
        assert fit_recipe(self.resume_recipe or recipes[0], tmp_path, *ddp) == 0
