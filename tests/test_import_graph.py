"""The house imports one way: no import circle among aipflow's modules (imports inside functions count: a lazy
import still ties two modules together), and every ``aipflow`` command works in an install without pytest (the
docker image installs no test extra)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (module level and inside functions); a package's ``__init__``
    re-exporting its own children is not an edge."""
    files = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = {e for e in edges if not (is_package and e.startswith(name + "."))}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_inside_aipflow():
    assert circles(module_graph(ROOT / "aipflow")) == []


def test_the_circle_finder_finds_a_planted_circle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.a import x\n")  # re-exporting a child: not a circle
    (package / "a.py").write_text("x = 1\ndef f():\n    from pkg import b\n")
    (package / "b.py").write_text("from pkg.a import x\n")
    assert circles(module_graph(package)) == [["pkg.a", "pkg.b"]]


BLOCK_PYTEST = """
    import sys

    class NoPytest:  # the install without the test extra
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pytest", "_pytest"):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, NoPytest())
"""


def test_every_command_works_without_pytest(tmp_path):
    code = textwrap.dedent(BLOCK_PYTEST) + textwrap.dedent(
        f"""
        import aipflow.testing
        from aipflow.cli import main

        codes = {{
            "recipes": main(["recipes"]),
            "env": main(["env"]),
            "plugins": main(["plugins"]),
            "plugins --check": main(["plugins", "--check", "compress", "weaksup"]),
            "plugin new": main(["plugin", "new", "demo", "--dir", {str(tmp_path)!r}]),
            "compress --help": main(["compress", "--help"]),
            "fit": main(["fit", "--config", "sgd", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false",
                         "--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]),
        }}
        print("CODES", codes, "pytest" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("CODES")), None)
    assert line is not None, done.stderr[-3000:]
    assert line.endswith("False"), line
    assert all(f"'{name}': 0" in line for name in ("recipes", "env", "plugins", "plugins --check", "fit")), line
    assert "'plugin new': 0" in line and "'compress --help': 0" in line, line
