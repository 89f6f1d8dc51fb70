import os

# Triton's interpreter must be chosen before the first `import triton` (lightning imports it).
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")


# lightning's log handler binds sys.stderr when lightning is imported: import it here, with the real stderr, not
# inside a test's capture that a later test finds closed ("--- Logging error ---")
import lightning.pytorch  # noqa: E402, F401
import pytest  # noqa: E402

from tests import threads  # noqa: E402

threads.one_per_worker()

from aipflow.plugins import reset_registry  # noqa: E402

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
def toy_plugins(plugin_site):
    """Three installed plugins: ok (with a recipe), broken and incompatible."""
    package = plugin_site("aipflow-toy-ok", "0.3.1", "aipflow_toy_ok", OK_PLUGIN, "toy")
    (package / "recipes").mkdir()
    (package / "recipes" / "toyrecipe.yaml").write_text("# a toy recipe\nseed_everything: 1\n")
    plugin_site("aipflow-toy-broken", "0.0.1", "aipflow_toy_broken", BROKEN_PLUGIN, "broken")
    plugin_site("aipflow-toy-future", "9.0", "aipflow_toy_future", INCOMPATIBLE_PLUGIN, "future")
    return package.parent


@pytest.fixture(autouse=True)
def _fresh_registry():
    reset_registry()
    yield
    reset_registry()
