import os

# Triton's interpreter must be chosen before the first `import triton` (lightning imports it).
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")

import importlib  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

# lightning's log handler binds sys.stderr when lightning is imported: import it here, with the real stderr, not
# inside a test's capture that a later test finds closed ("--- Logging error ---")
import lightning.pytorch  # noqa: E402, F401
import pytest  # noqa: E402

from aipflow.plugins import reset_registry  # noqa: E402


def write_distribution(site: Path, dist: str, version: str, module: str, source: str, entry_point: str) -> None:
    """Install a real (if minimal) distribution into ``site``: a module plus dist-info with entry-point metadata,
    exactly what importlib.metadata reads for a pip-installed package."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[aipflow.plugins]\n{entry_point} = {module}:plugin\n")
    (info / "top_level.txt").write_text(module + "\n")


OK_PLUGIN = """
    import torch
    from lightning.pytorch.callbacks import Callback
    from aipflow.plugins import Plugin

    CREATED = {"loss": 0, "callback": 0}

    class ToyLoss(torch.nn.Module):
        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            CREATED["loss"] += 1
            self.scale = scale

        def forward(self, logits, y):
            return self.scale * torch.nn.functional.cross_entropy(logits, y)

    class ToyCallback(Callback):
        def __init__(self) -> None:
            CREATED["callback"] += 1

    plugin = Plugin(
        name="toy",
        api_version="1.0",
        components={"ToyLoss": "aipflow_toy_ok:ToyLoss", "ToyCallback": "aipflow_toy_ok:ToyCallback"},
        recipes="aipflow_toy_ok:recipes",
    )
"""

BROKEN_PLUGIN = """
    from aipflow.plugins import Plugin
    import a_module_that_does_not_exist_anywhere  # the plugin's own bug
    plugin = Plugin(name="broken", api_version="1.0", components={})
"""

INCOMPATIBLE_PLUGIN = """
    from aipflow.plugins import Plugin
    class Future:
        pass
    plugin = Plugin(name="future", api_version="2.0", components={"FutureThing": "aipflow_toy_future:Future"})
"""


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A site directory holding three installed plugins: ok, broken and incompatible."""
    site = tmp_path / "site"
    write_distribution(site, "aipflow-toy-ok", "0.3.1", "aipflow_toy_ok", OK_PLUGIN, "toy")
    recipes = site / "aipflow_toy_ok" / "recipes"
    recipes.mkdir()
    (recipes / "toyrecipe.yaml").write_text("# a toy recipe\nseed_everything: 1\n")
    write_distribution(site, "aipflow-toy-broken", "0.0.1", "aipflow_toy_broken", BROKEN_PLUGIN, "broken")
    write_distribution(site, "aipflow-toy-future", "9.0", "aipflow_toy_future", INCOMPATIBLE_PLUGIN, "future")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("AIPFLOW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("AIPFLOW_PLUGINS", raising=False)
    importlib.invalidate_caches()
    reset_registry()
    yield site
    for name in [m for m in sys.modules if m.startswith("aipflow_toy")]:
        del sys.modules[name]
    reset_registry()


@pytest.fixture(autouse=True)
def _fresh_registry():
    reset_registry()
    yield
    reset_registry()
