"""Nothing of ours edits ``sys.path`` or takes the name of a package a dependency imports.

``benchmarks/kernels.py`` once put its folder first on ``sys.path`` when a test imported it; from then on
transformers' ``from kernels import ...`` (the PyPI package ``kernels``, which transformers 5.25 needs) found the
benchmark script instead, and every transformers model load in the same pytest process failed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_importing_every_benchmark_leaves_sys_path_alone():
    before = list(sys.path)
    for name in BENCHMARKS:
        importlib.import_module(f"benchmarks.{name}")
    assert sys.path == before
    assert Path(importlib.util.find_spec("benchmarks").origin).parent == ROOT / "benchmarks"


def test_no_module_of_ours_shadows_the_kernels_package():
    """Run after the benchmarks were imported (above, and the kernels' smoke test): ``kernels`` is the installed
    package, from site-packages, or nothing."""
    for name in BENCHMARKS:
        importlib.import_module(f"benchmarks.{name}")
    spec = importlib.util.find_spec("kernels")
    if spec is None:
        pytest.skip("the kernels package is not installed (transformers does not need it here)")
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert any(parent in site for parent in Path(spec.origin).resolve().parents), spec.origin


def _edits_sys_path(tree) -> bool:
    """A call of ``sys.path.insert / append / extend`` or an assignment to ``sys.path`` (or an item of it)."""
    import ast

    def is_sys_path(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("insert", "append", "extend") and is_sys_path(node.func.value):
                return True
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)) for t in targets):
                return True
    return False


def test_no_source_file_edits_sys_path():
    """The import path belongs to Python and pytest: no module of ours (core, plugins, benchmarks, scripts)
    inserts into, appends to or assigns ``sys.path``."""
    import ast

    offenders = []
    for folder in ("aipflow", "plugins", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if "/tests/" in path.as_posix():
                continue
            if _edits_sys_path(ast.parse(path.read_text())):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_sys_path_finder_finds_the_edits():
    import ast

    assert _edits_sys_path(ast.parse("import sys\nsys.path.insert(0, 'x')"))
    assert _edits_sys_path(ast.parse("import sys\nsys.path[:0] = ['x']"))
    assert not _edits_sys_path(ast.parse("text = 'sys.path.insert(0, x)'"))
