"""aipflow's plugin conformance suite (aipflow.testing), run on weaksup as installed: what every plugin must pass."""

from aipflow.testing import PluginConformance


class TestConformance(PluginConformance):
    plugin = "weaksup"
    resume_recipe = "weaksup/pu_nnpu"
