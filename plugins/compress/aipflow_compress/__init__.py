"""aipflow-compress: model compression as an aipflow plugin (contract api 1.1): pruning (magnitude, one-shot or
gradual during fit; structured channels), int8 quantization, low-rank and Tucker-2 factorisation, knowledge
distillation, and the ``aipflow compress`` command that applies one to a trained run and reports.

In Python, one verb applies any method: ``compress_(model, config)`` with a frozen config per method
(:mod:`aipflow_compress.api`). Only aipflow's public API is imported here; component modules load when a recipe
names them.
"""

from aipflow.plugins import Plugin

__version__ = "0.1.0"

plugin = Plugin(
    name="compress",
    api_version="1.1",  # 1.1: the `aipflow compress` command
    components={
        "GradualMagnitudePruning": "aipflow_compress.pruning:GradualMagnitudePruning",
        "DistillationTask": "aipflow_compress.distill:DistillationTask",
        "QuantizationAwareTraining": "aipflow_compress.qat:QuantizationAwareTraining",
    },
    recipes="aipflow_compress:recipes",
    commands={"compress": "aipflow_compress.command:main"},
)

__all__ = ["plugin"]  # and, loaded on first use, every name of aipflow_compress.api (compress_ and the configs)


def __getattr__(name: str):
    # the configs and the verb load on first use: plugin discovery (every `aipflow` start) imports only this file
    import importlib

    api = importlib.import_module("aipflow_compress.api")  # (not `from . import api`: that asks this hook again)
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'aipflow_compress' has no attribute {name!r}")
