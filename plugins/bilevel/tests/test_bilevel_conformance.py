"""aipflow's plugin conformance suite (aipflow.testing), run on bilevel as installed: what every plugin must pass
(the Meta-Weight-Net recipe fits and resumes equal to the uninterrupted run: the weighting network, its Adam state
and the clean set's order travel in the checkpoint)."""

from aipflow.testing import PluginConformance


class TestConformance(PluginConformance):
    plugin = "bilevel"
    fit_recipes = ()  # tests/test_golden_recipes.py fits every in-tree recipe and checks its result
    resume_recipe = "bilevel/digits_mwn"
