"""The parts of the plugin authors' kit that need pytest: the ``plugin_site`` fixture and the conformance suite.
Reached through :mod:`aipflow.testing` (which imports this module only when pytest is there)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aipflow.cli.check import check_plugin, plugin_recipes, plugin_record
from aipflow.plugins import get_registry, reset_registry
from aipflow.testing import _env, discovery_imports, fit_recipe, install_distribution

__all__ = ["PluginConformance", "plugin_site"]


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


# ------------------------------------------------------------------------------------------ the suite
class PluginConformance:
    """Subclass as ``TestSomething`` with ``plugin = "<Plugin.name>"``. ``fit_recipes`` limits the recipes that
    are trained two steps (default: all; ``()``: none, when another test fits them already); ``resume_recipe`` is
    the one resumed and fitted on two processes (default: the first to fit, else the first)."""

    plugin: str = ""
    fit_recipes: tuple[str, ...] | None = None
    resume_recipe: str | None = None

    @pytest.fixture(autouse=True)
    def _offline(self, monkeypatch):
        for key, value in _env().items():
            if key.endswith("OFFLINE"):
                monkeypatch.setenv(key, value)

    def _recipes(self) -> list[str]:
        """The recipes to fit (``fit_recipes``; all by default)."""
        recipes = plugin_recipes(self.plugin)
        return [
            r
            for r in recipes
            if self.fit_recipes is None or r in self.fit_recipes or r.split("/", 1)[1] in self.fit_recipes
        ]

    def test_discovered_loads_and_is_compatible(self):
        record = plugin_record(self.plugin, get_registry())
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

        recipes = plugin_recipes(self.plugin)
        if not recipes:
            pytest.skip(f"plugin {self.plugin!r} ships no recipes")
        recipe = self.resume_recipe or (self._recipes() or recipes)[0]
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
        recipes = plugin_recipes(self.plugin)
        if not recipes:
            pytest.skip(f"plugin {self.plugin!r} ships no recipes")
        ddp = ("--trainer.strategy=ddp_fork", "--trainer.devices=2", "--trainer.accelerator=cpu")
        assert fit_recipe(self.resume_recipe or (self._recipes() or recipes)[0], tmp_path, *ddp) == 0
