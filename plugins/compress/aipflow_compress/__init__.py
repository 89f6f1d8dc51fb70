"""aipflow-compress: model compression as an aipflow plugin (contract api 1.0): magnitude pruning, one-shot or
gradual during fit (Zhu & Gupta 2018), and low-rank factorisation of Linear layers by truncated SVD.

Only aipflow's public API is imported here; component modules load when a recipe names them.
"""

from aipflow.plugins import Plugin

__version__ = "0.1.0"

plugin = Plugin(
    name="compress",
    api_version="1.0",
    components={
        "GradualMagnitudePruning": "aipflow_compress.pruning:GradualMagnitudePruning",
        "DistillationTask": "aipflow_compress.distill:DistillationTask",
    },
    recipes="aipflow_compress:recipes",
)
