"""aipflow's plugin conformance suite (aipflow.testing), run on compress as installed: what every plugin must pass
(the gradual-pruning recipe fits and resumes equal to the uninterrupted run)."""

from aipflow.testing import PluginConformance


class TestConformance(PluginConformance):
    plugin = "compress"
    fit_recipes = ()  # tests/test_golden_recipes.py fits every in-tree recipe and checks its result
    resume_recipe = "compress/digits_gradual_pruning"
