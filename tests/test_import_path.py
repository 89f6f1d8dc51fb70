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


def test_no_source_file_edits_sys_path():
    """The import path belongs to Python and pytest: no module of ours (core, plugins, benchmarks, scripts)
    inserts into or appends to it."""
    offenders = []
    for folder in ("aipflow", "plugins", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if "/tests/" in path.as_posix():
                continue
            text = path.read_text()
            if "sys.path.insert" in text or "sys.path.append" in text or "sys.path[" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
