"""One verb for every compression method: ``compress_(model, config)``, as torchao's ``quantize_(model, config)``.

Each method has one frozen config class whose fields are its options (the paper's defaults); every layer-wise
method takes the same :class:`LayerFilter`; every call returns the same :class:`CompressionReport`. torchao's own
quantization configs (``Int8WeightOnlyConfig()``, ...) are accepted as they are and applied to the Linear layers.
The ``aipflow compress`` command builds these configs from its options (:func:`config_from_options`), so Python
and the command run the same code::

    from aipflow_compress import LowRankConfig, MagnitudePruningConfig, compress_

    report = compress_(model, MagnitudePruningConfig(sparsity=0.7))
    report = compress_(model, LowRankConfig(energy=0.95, layers=LayerFilter(exclude="head")))
    print(report.settings, report.layers)

The functions underneath (``prune_magnitude``, ``low_rank``, ...) stay the functional forms of each method.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

import aipflow_compress.configs as configs
from aipflow_compress.configs import (
    ChannelPruningConfig,
    CompressionConfig,
    CompressionReport,
    CPConfig,
    HeadPruningConfig,
    Int8Config,
    LayerFilter,
    LowRankConfig,
    MagnitudePruningConfig,
    TensorTrainConfig,
    TuckerConfig,
)

__all__ = [*configs.__all__, "compress_", "config_from_options"]


def _replaced(layers: dict[str, dict]) -> str:
    return f"({sum(entry['replaced'] for entry in layers.values())} of {len(layers)} layers)"


def compress_(
    model: nn.Module,
    config: CompressionConfig | Any,
    *,
    example_inputs: torch.Tensor | dict[str, torch.Tensor] | None = None,
    calibration: Iterable[Any] = (),
) -> CompressionReport:
    """Compress ``model`` in place as ``config`` says (a config of this module, or a torchao quantization config)
    and report it. ``example_inputs``: a batch, for channel pruning (it traces the network) and static int8;
    ``calibration``: batches for static int8 (inputs) and head sensitivity (whatever the loss takes)."""
    include = exclude = None
    if isinstance(getattr(config, "layers", None), LayerFilter):
        include, exclude = config.layers.include, config.layers.exclude
    if isinstance(config, MagnitudePruningConfig):
        from aipflow_compress.pruning import magnitude_pruning_

        return magnitude_pruning_(model, config)
    if isinstance(config, ChannelPruningConfig):
        from aipflow_compress.structured import prune_channels

        if example_inputs is None:
            raise ValueError("ChannelPruningConfig: compress_ needs example_inputs (a batch) to trace the network")
        global_pruning = config.scope == "global"
        layers = prune_channels(
            model, example_inputs, config.ratio, config.importance, global_pruning, exclude, config.round_to
        )
        return CompressionReport("channels", f"ratio {config.ratio} ({config.importance})", layers, model)
    if isinstance(config, HeadPruningConfig):
        from aipflow_compress.heads import prune_heads

        batches = list(calibration) or None
        layers = prune_heads(model, config.ratio, config.importance, config.scope == "global", batches=batches)
        settings = f"ratio {config.ratio} ({config.importance}, {config.scope})"
        return CompressionReport("heads", settings, layers, model)
    if isinstance(config, Int8Config):
        from aipflow_compress.quantize import quantize_linear_layers, quantize_static

        if config.scheme == "int8_static":
            if example_inputs is None:
                raise ValueError("Int8Config(scheme='int8_static'): compress_ needs example_inputs and calibration")
            converted = quantize_static(model, example_inputs, calibration)
            return CompressionReport("quantize", config.scheme, {}, converted)
        names = quantize_linear_layers(model.eval(), config.scheme, include, exclude)
        return CompressionReport("quantize", config.scheme, {name: {"replaced": True} for name in names}, model)
    if isinstance(config, (LowRankConfig, TuckerConfig)):
        from aipflow_compress.lowrank import low_rank
        from aipflow_compress.tucker import tucker_convs

        kind = type(config).__name__
        if config.energy is None and config.ratio is None and config.rank is None:
            raise ValueError(f"{kind}: give one of rank, energy, ratio")
        if isinstance(config, LowRankConfig):
            method, layers = "low_rank", low_rank(model, config.rank, config.energy, config.ratio, include, exclude)
        else:
            method = "tucker"
            layers = tucker_convs(
                model, config.rank, config.energy, config.ratio, include, exclude, iterations=config.iterations
            )
        chosen = {k: v for k, v in (("energy", config.energy), ("ratio", config.ratio), ("rank", config.rank)) if v}
        settings = ", ".join(f"{k} {v}" for k, v in chosen.items()) + f" {_replaced(layers)}"
        return CompressionReport(method, settings, layers, model)
    if isinstance(config, CPConfig):
        from aipflow_compress.cp import cp_convs

        layers = cp_convs(model, config.rank, config.ratio, config.iterations, config.max_gflop, include, exclude)
        chosen = f"rank {config.rank}" if config.rank else f"ratio {config.ratio}"
        return CompressionReport("cp", f"{chosen} {_replaced(layers)}", layers, model)
    if isinstance(config, TensorTrainConfig):
        from aipflow_compress.tensor_train import tensor_train_linears

        layers = tensor_train_linears(model, config.epsilon, config.max_rank, config.cores, include, exclude)
        settings = f"epsilon {config.epsilon}, max rank {config.max_rank} {_replaced(layers)}"
        return CompressionReport("tensor_train", settings, layers, model)
    if _is_torchao_config(config):
        from torchao.quantization import quantize_

        names = [name for name, module in model.named_modules() if type(module) is nn.Linear]
        quantize_(model.eval(), config)
        return CompressionReport("quantize", type(config).__name__, {n: {"replaced": True} for n in names}, model)
    raise TypeError(
        f"compress_: config must be one of {', '.join(c.__name__ for c in CompressionConfig.__args__)} or a "
        f"torchao quantization config, got {type(config).__name__}"
    )


def _is_torchao_config(config: Any) -> bool:
    try:
        from torchao.core.config import AOBaseConfig
    except ImportError:  # torchao is a dependency; a broken install still gets the TypeError's line
        return False
    return isinstance(config, AOBaseConfig)


#: the command's ``--method`` names and the config each builds
METHOD_CONFIGS: dict[str, type] = {
    "prune": MagnitudePruningConfig,
    "channels": ChannelPruningConfig,
    "heads": HeadPruningConfig,
    "quantize": Int8Config,
    "low_rank": LowRankConfig,
    "tucker": TuckerConfig,
    "cp": CPConfig,
    "tensor_train": TensorTrainConfig,
}


def config_from_options(method: str, options: argparse.Namespace) -> CompressionConfig:
    """The config the ``aipflow compress`` command's options describe (``--method prune --sparsity 0.7`` ->
    ``MagnitudePruningConfig(sparsity=0.7)``)."""
    ratio = 0.5 if options.ratio is None else options.ratio
    if method == "prune":
        return MagnitudePruningConfig(sparsity=options.sparsity, scope=options.scope)
    if method == "channels":
        return ChannelPruningConfig(ratio=ratio, importance=options.importance)
    if method == "heads":
        return HeadPruningConfig(ratio=ratio, importance=options.importance, scope=options.scope)
    if method == "quantize":
        return Int8Config(scheme=options.scheme)
    if method in ("low_rank", "tucker"):
        if options.energy is None and options.ratio is None and options.rank is None:
            raise ValueError(f"aipflow compress --method {method}: give one of --energy, --ratio, --rank")
        return METHOD_CONFIGS[method](rank=options.rank, energy=options.energy, ratio=options.ratio)
    if method == "cp":
        return CPConfig(rank=options.rank, ratio=options.ratio)
    if method == "tensor_train":
        return TensorTrainConfig(epsilon=options.epsilon, max_rank=options.rank)
    raise ValueError(f"aipflow compress --method must be one of {tuple(METHOD_CONFIGS)}, got {method!r}")
