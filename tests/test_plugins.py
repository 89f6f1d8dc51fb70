import sys

import pytest

from aipflow.cli import main
from aipflow.config import ConfigError, list_recipes, rewrite_short_names
from aipflow.plugins import PLUGIN_API_VERSION, Plugin, PluginError, Registry, discover, get_registry, is_compatible
from aipflow.testing import check_plugin


def test_discovery_reports_ok_broken_incompatible(toy_plugins):
    records = {r.entry_point: r for r in discover()}
    assert {"toy", "broken", "future"} <= set(records)
    ok, broken, future = records["toy"], records["broken"], records["future"]
    assert (ok.status, ok.distribution, ok.version) == ("ok", "aipflow-toy-ok", "0.3.1")
    assert broken.status == "broken" and "a_module_that_does_not_exist_anywhere" in broken.error
    assert future.status == "incompatible" and future.plugin.api_version == "2.0"
    registry = get_registry()
    assert "ToyLoss" in registry and "FutureThing" not in registry
    assert registry.get("ToyLoss").source == "toy"


def test_plugins_command_lists_statuses(toy_plugins, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "aipflow-toy-ok 0.3.1  api 1.0  ok  components: ToyCallback, ToyLoss +recipes" in out
    assert "aipflow-toy-broken 0.0.1  broken: ModuleNotFoundError" in out
    assert f"incompatible: requires api 2.0, found {PLUGIN_API_VERSION}" in out


def test_disable_autoload_and_allowlist(toy_plugins, monkeypatch):
    monkeypatch.setenv("AIPFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert discover() == []
    monkeypatch.delenv("AIPFLOW_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("AIPFLOW_PLUGINS", "toy")
    assert [r.name for r in discover()] == ["toy"]
    monkeypatch.setenv("AIPFLOW_PLUGINS", "toy,nosuchplugin")
    with pytest.raises(PluginError, match=r"unknown plugin\(s\) \['nosuchplugin'\]"):
        discover()


def test_short_names_resolve_and_typos_suggest(toy_plugins):
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


def test_component_of_broken_plugin_names_distribution_version_and_error(toy_plugins):
    with pytest.raises(ConfigError) as info:
        rewrite_short_names({"model": {"class_path": "aipflow_toy_broken.Thing"}})
    msg = str(info.value)
    assert "aipflow-toy-broken 0.0.1" in msg and "ModuleNotFoundError" in msg and "model.class_path" in msg
    # an unknown short name mentions the plugins that did not load
    with pytest.raises(ConfigError, match="aipflow-toy-broken 0.0.1 failed to load"):
        rewrite_short_names({"class_path": "BrokenThing"})


def test_plugin_recipes_are_listed(toy_plugins):
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


def test_plugin_component_runs_from_yaml_and_callbacks_are_never_added(toy_plugins, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loss.yaml").write_text(
        "model:\n  init_args:\n    loss:\n      class_path: ToyLoss\n      init_args:\n        scale: 2.0\n"
    )
    code = main(_tiny_fit_args(["--config", str(tmp_path / "loss.yaml")]))
    assert code == 0, capsys.readouterr().err
    created = sys.modules["aipflow_toy_ok"].CREATED
    assert created["loss"] == 1
    assert created["callback"] == 0  # an installed plugin adds nothing a recipe did not ask for


def test_broken_plugin_does_not_stop_core_runs(toy_plugins, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_tiny_fit_args([])) == 0


def test_plugin_value_errors():
    with pytest.raises(PluginError, match="api_version must look like"):
        Plugin(name="x", api_version="one")
    assert is_compatible("1.0") and not is_compatible("1.99") and not is_compatible("0.9")
    registry = Registry([Plugin("aipflow", "1.0", {"A": "m:A"}), Plugin("p", "1.0", {"A": "n:A", "B": "n:B"})])
    assert registry.get("A").target == "m:A" and registry.get("p:A").target == "n:A"  # the core's; p's qualified
    assert registry.conflicts == ["p: component 'A' has a core name: the core's is used; this one only as 'p:A'"]


def test_two_plugins_with_one_name_make_it_ambiguous():
    registry = Registry(
        [Plugin("aipflow", "1.0", {}), Plugin("p", "1.0", {"X": "a:X"}), Plugin("q", "1.0", {"X": "b:X"})]
    )
    with pytest.raises(PluginError, match="'X' is declared by several plugins: use p:X or q:X"):
        registry.get("X")
    assert registry.get("q:X").target == "b:X"
    assert (
        registry.clashes_of("p")
        == registry.clashes_of("q")
        == ["component 'X' is also declared by another plugin: use p:X or q:X"]
    )


# ------------------------------------------------------------------ planted faults: one line each, from --check and fit
FAULTY = """
    from aipflow.plugins import Plugin
    plugin = Plugin(
        name="faulty",
        api_version="1.0",
        components={"Nope": "aipflow_faulty:Nope", "GCE": "aipflow_faulty:GCE", "Gone": "aipflow_faulty_gone.x:Y"},
        recipes="aipflow_faulty:recipes",
    )
    class GCE:
        pass
"""


def check_lines(capsys, *names):
    code = main(["plugins", "--check", *names])
    out = capsys.readouterr().out.splitlines()
    return code, [line.removeprefix("aipflow plugins --check: ") for line in out]


def test_check_names_each_fault_in_one_line(plugin_site, capsys):
    plugin_site("aipflow-faulty", "0.2.0", "aipflow_faulty", FAULTY, "faulty")  # no recipes folder shipped
    code, lines = check_lines(capsys, "faulty")
    assert code == 1 and len(lines) == 4, lines
    assert (
        "plugin 'faulty': component 'GCE' has a core name: the core's is used; this one only as 'faulty:GCE'" in lines
    )
    assert (
        "plugin 'faulty' aipflow-faulty 0.2.0: component 'Nope' -> 'aipflow_faulty:Nope' does not import: "
        "AttributeError: module 'aipflow_faulty' has no attribute 'Nope'" in lines
    )
    assert any("component 'Gone' -> 'aipflow_faulty_gone.x:Y' does not import: ModuleNotFoundError" in x for x in lines)
    assert any(x.startswith("plugin 'faulty': its recipes folder") and "does not exist" in x for x in lines)
    main(["plugins"])
    out = capsys.readouterr().out
    assert "does not exist" in out and "+recipes" not in out.split("aipflow-faulty")[1].split("\n")[0]


def test_check_reports_broken_and_incompatible_plugins(toy_plugins, capsys):
    code, lines = check_lines(capsys, "broken", "future")
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith("plugin 'broken' from distribution aipflow-toy-broken 0.0.1 failed to load: ")
    assert lines[1] == (
        "plugin 'future' from distribution aipflow-toy-future 9.0 is incompatible: it requires plugin api 2.0, "
        f"aipflow provides {PLUGIN_API_VERSION}"
    )
    code, lines = check_lines(capsys, "toy")
    assert code == 0 and lines == ["toy: ok"]


def test_a_fit_using_a_faulty_component_says_it_in_one_line(plugin_site, tmp_path, monkeypatch, capsys):
    plugin_site("aipflow-faulty", "0.2.0", "aipflow_faulty", FAULTY, "faulty")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loss.yaml").write_text("model:\n  init_args:\n    loss:\n      class_path: Nope\n")
    assert main(_tiny_fit_args(["--config", str(tmp_path / "loss.yaml")])) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aipflow: error")]
    assert err == [
        "aipflow: error: plugin 'faulty' aipflow-faulty 0.2.0: component 'Nope' -> 'aipflow_faulty:Nope' does not "
        "import: AttributeError: module 'aipflow_faulty' has no attribute 'Nope'"
    ]
    # the qualified name reaches the plugin's GCE, the bare one the core's
    assert rewrite_short_names({"loss": {"class_path": "faulty:GCE"}})["loss"]["class_path"] == "aipflow_faulty.GCE"
    assert rewrite_short_names({"loss": {"class_path": "GCE"}})["loss"]["class_path"] == "aipflow.losses.robust.GCE"


# ------------------------------------------------------------------ plugin commands (api 1.1)
COMMANDS = """
    from aipflow.plugins import Plugin
    CALLS = []

    def hello(argv):
        if argv == ["--bad"]:
            raise ValueError("hello: --bad is not an option")
        CALLS.append(argv)
        return 0

    plugin = Plugin(
        name="greeter",
        api_version="1.1",
        commands={"hello": "aipflow_greeter:hello", "fit": "aipflow_greeter:hello", "missing": "aipflow_greeter:nope"},
    )
"""


def test_a_plugin_command_runs_as_a_subcommand_and_fails_in_one_line(plugin_site, capsys):
    plugin_site("aipflow-greeter", "0.1.0", "aipflow_greeter", COMMANDS, "greeter")
    assert main(["hello", "--to", "you"]) == 0
    import aipflow_greeter

    assert aipflow_greeter.CALLS == [["--to", "you"]]
    assert main(["hello", "--bad"]) == 2
    assert "aipflow: error: ValueError: hello: --bad is not an option" in capsys.readouterr().err
    registry = get_registry()
    assert registry.command_names("greeter") == ["hello", "missing"]  # 'fit' is the core's
    assert registry.clashes_of("greeter") == ["command 'fit' is a core command: not available"]
    problems = check_plugin("greeter", parse_recipes=False)
    assert any("command 'missing' -> 'aipflow_greeter:nope' does not import" in p for p in problems)


def test_two_plugins_with_one_command_make_neither_available():
    registry = Registry([Plugin("p", "1.1", commands={"go": "a:go"}), Plugin("q", "1.1", commands={"go": "b:go"})])
    assert registry.command("go") is None
    assert registry.clashes_of("q") == ["command 'go' is declared by p and q: neither is available"]
