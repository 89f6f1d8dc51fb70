"""aipflow-bilevel: multi-level optimisation as an aipflow plugin (contract api 1.1): hypergradients of a
validation loss by implicit differentiation (Neumann series, conjugate gradients) and truncated unrolling, and
learning to reweight noisy training examples with a small clean set (L2RW, Meta-Weight-Net) as a task that takes
every core loss and optimizer.

Only aipflow's public API is imported here; component modules load when a recipe names them.
"""

from aipflow.plugins import Plugin

__version__ = "0.1.0"

plugin = Plugin(
    name="bilevel",
    api_version="1.2",  # 1.2: ClassificationTask.per_example_loss
    components={
        "ReweightingTask": "aipflow_bilevel.reweighting:ReweightingTask",
        "HypergradientTask": "aipflow_bilevel.tuning:HypergradientTask",
    },
    recipes="aipflow_bilevel:recipes",
)
