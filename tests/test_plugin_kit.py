"""The plugin authors' kit: `aipflow plugin new` writes a plugin that installs (a normal install, recipes
included), passes its own tests and aipflow's conformance suite offline, trains from its recipe, and is clean under
`aipflow plugins --check`; the README shows exactly what it writes; plugins use only the public API."""

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aipflow
from aipflow import PUBLIC_MODULES
from aipflow._template import render
from aipflow.cli import main

ROOT = Path(__file__).resolve().parent.parent


def readme_block(language: str, after: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after) :]
    return re.search(rf"```{language}\n(.*?)\n```", section, re.S).group(1) + "\n"


def test_the_readme_shows_what_plugin_new_writes():
    files = render("myplugin")
    assert readme_block("toml", "### Write a plugin") == files["pyproject.toml"]
    assert readme_block("python", "### Write a plugin") == files["aipflow_myplugin/__init__.py"]


def test_plugin_new_refuses_bad_names_and_existing_folders(tmp_path, capsys):
    assert main(["plugin", "new", "My-Plugin", "--dir", str(tmp_path)]) == 2
    assert "use lowercase letters, digits and _" in capsys.readouterr().err
    assert main(["plugin", "new", "demo", "--dir", str(tmp_path)]) == 0
    assert main(["plugin", "new", "demo", "--dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_version_and_public_modules_declare_their_api():
    from importlib.metadata import version

    assert aipflow.__version__ == version("aipflow")
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ lists missing names {missing}"


def test_the_plugin_docs_list_the_public_modules():
    text = " ".join((ROOT / "docs" / "plugins.md").read_text().split())
    listed = text.split("modules ", 1)[1].split(" Modules and names starting with")[0]
    named = [m for m in listed.replace("`", " ").replace(",", " ").split() if m.startswith("aipflow.")]
    assert sorted(set(named)) == sorted(PUBLIC_MODULES)


def test_in_tree_plugins_import_only_the_public_api():
    offenders = []
    for path in (ROOT / "plugins").glob("*/aipflow_*/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aipflow":
                public = importlib.import_module(node.module) if node.module in PUBLIC_MODULES else None
                for alias in node.names:
                    if public is None or alias.name not in public.__all__:
                        offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_a_new_plugin_installs_passes_its_tests_and_trains(tmp_path):
    # a normal install (not editable: that would hide missing package data) of the README's pyproject verbatim
    exe = shutil.which("aipflow")
    subprocess.run([exe, "plugin", "new", "myplugin", "--dir", str(tmp_path)], check=True, capture_output=True)
    plugin = tmp_path / "myplugin"
    (plugin / "pyproject.toml").write_text(readme_block("toml", "### Write a plugin"))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run([*pip, str(plugin)], check=True, capture_output=True, text=True)
    assert (site / "aipflow_myplugin" / "recipes" / "wine.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("AIPFLOW_PLUGINS", None)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=plugin,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0 and " passed" in tests.stdout, tests.stdout[-3000:] + tests.stderr[-2000:]
    check = subprocess.run([exe, "plugins", "--check", "myplugin"], env=env, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == "aipflow plugins --check: myplugin: ok", check.stdout
    fit = subprocess.run(
        [exe, "fit", "--config", "myplugin/wine", "--trainer.max_epochs=5", "--trainer.enable_progress_bar=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    accuracy = float(re.search(r"test/acc\s+([0-9.]+)", fit.stdout).group(1))
    assert accuracy > 0.8  # wine, 5 epochs of SAM on the Taylor cross entropy: about 0.97
