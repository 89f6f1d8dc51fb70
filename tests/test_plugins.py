import sys

import pytest

from aipflow.cli import main
from aipflow.config import ConfigError, list_recipes, rewrite_short_names
from aipflow.plugins import PLUGIN_API_VERSION, Plugin, PluginError, Registry, discover, get_registry, is_compatible


def test_discovery_reports_ok_broken_incompatible(plugin_site):
    records = {r.entry_point: r for r in discover()}
    assert {"toy", "broken", "future"} <= set(records)
    ok, broken, future = records["toy"], records["broken"], records["future"]
    assert (ok.status, ok.distribution, ok.version) == ("ok", "aipflow-toy-ok", "0.3.1")
    assert broken.status == "broken" and "a_module_that_does_not_exist_anywhere" in broken.error
    assert future.status == "incompatible" and future.plugin.api_version == "2.0"
    registry = get_registry()
    assert "ToyLoss" in registry and "FutureThing" not in registry
    assert registry.get("ToyLoss").source == "toy"


def test_plugins_command_lists_statuses(plugin_site, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "aipflow-toy-ok 0.3.1  api 1.0  ok  components: ToyCallback, ToyLoss +recipes" in out
    assert "aipflow-toy-broken 0.0.1  broken: ModuleNotFoundError" in out
    assert f"incompatible: requires api 2.0, found {PLUGIN_API_VERSION}" in out


def test_disable_autoload_and_allowlist(plugin_site, monkeypatch):
    monkeypatch.setenv("AIPFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert discover() == []
    monkeypatch.delenv("AIPFLOW_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("AIPFLOW_PLUGINS", "toy")
    assert [r.name for r in discover()] == ["toy"]
    monkeypatch.setenv("AIPFLOW_PLUGINS", "toy,nosuchplugin")
    with pytest.raises(PluginError, match=r"unknown plugin\(s\) \['nosuchplugin'\]"):
        discover()


def test_short_names_resolve_and_typos_suggest(plugin_site):
    cfg = {
        "model": {"init_args": {"loss": {"class_path": "ToyLoss"}, "peer_loss": "ToyLoss"}},
        "callbacks": ["ToyLoss"],
    }
    cfg["model"]["init_args"]["loss_too"] = {"loss": "ToyLoss"}
    out = rewrite_short_names(cfg)
    assert out["model"]["init_args"]["loss"]["class_path"] == "aipflow_toy_ok.ToyLoss"
    assert out["model"]["init_args"]["loss_too"]["loss"] == "aipflow_toy_ok.ToyLoss"  # a component key
    assert out["callbacks"] == ["aipflow_toy_ok.ToyLoss"]
    assert out["model"]["init_args"]["peer_loss"] == "ToyLoss"  # any other string stays as written
    with pytest.raises(ConfigError, match=r"model.loss.class_path: unknown component 'ToyLos'; did you mean 'ToyLoss'"):
        rewrite_short_names({"model": {"loss": {"class_path": "ToyLos"}}})


def test_component_of_broken_plugin_names_distribution_version_and_error(plugin_site):
    with pytest.raises(ConfigError) as info:
        rewrite_short_names({"model": {"class_path": "aipflow_toy_broken.Thing"}})
    msg = str(info.value)
    assert "aipflow-toy-broken 0.0.1" in msg and "ModuleNotFoundError" in msg and "model.class_path" in msg
    # an unknown short name mentions the plugins that did not load
    with pytest.raises(ConfigError, match="aipflow-toy-broken 0.0.1 failed to load"):
        rewrite_short_names({"class_path": "BrokenThing"})


def test_plugin_recipes_are_listed(plugin_site):
    from aipflow.config import resolve_recipe

    recipes = list_recipes()
    assert "quickstart" in recipes and "toy/toyrecipe" in recipes
    assert "toyrecipe" not in recipes  # each recipe listed once, under its plugin
    assert resolve_recipe("toyrecipe") == recipes["toy/toyrecipe"]  # the unique bare stem still works


def _tiny_fit_args(extra):
    return [
        "fit",
        "--config",
        "quickstart",
        "--trainer.fast_dev_run=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--trainer.callbacks=[]",
        *extra,
    ]


def test_plugin_component_runs_from_yaml_and_callbacks_are_never_added(plugin_site, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loss.yaml").write_text(
        "model:\n  init_args:\n    loss:\n      class_path: ToyLoss\n      init_args:\n        scale: 2.0\n"
    )
    code = main(_tiny_fit_args(["--config", str(tmp_path / "loss.yaml")]))
    assert code == 0, capsys.readouterr().err
    created = sys.modules["aipflow_toy_ok"].CREATED
    assert created["loss"] == 1
    assert created["callback"] == 0  # an installed plugin adds nothing a recipe did not ask for


def test_broken_plugin_does_not_stop_core_runs(plugin_site, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_tiny_fit_args([])) == 0


def test_plugin_value_errors():
    with pytest.raises(PluginError, match="api_version must look like"):
        Plugin(name="x", api_version="one")
    assert is_compatible("1.0") and not is_compatible("1.99") and not is_compatible("0.9")
    registry = Registry([Plugin("aipflow", "1.0", {"A": "m:A"}), Plugin("p", "1.0", {"A": "n:A", "B": "n:B"})])
    assert registry.get("A").target == "m:A" and registry.conflicts == ["'A' from p shadowed by aipflow"]
