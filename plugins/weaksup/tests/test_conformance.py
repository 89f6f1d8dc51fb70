"""aipflow's plugin conformance suite (aipflow.testing), run on weaksup as installed: what every plugin must pass."""

from aipflow.testing import PluginConformance


class TestConformance(PluginConformance):
    plugin = "weaksup"
    fit_recipes = ()  # tests/test_golden_recipes.py fits every in-tree recipe and checks its result
    resume_recipe = "weaksup/pu_nnpu"
