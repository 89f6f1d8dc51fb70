"""``compress_(model, config)``: every method behind one verb, checked against numpy (the weights a method keeps),
the layer filter honoured by every layer-wise method, torchao's own configs accepted, the command building the
same configs as Python, and one line for what is wrong."""

import argparse
import copy
import dataclasses

import numpy as np
import pytest
import torch
from aipflow_compress import (
    CPConfig,
    Int8Config,
    LayerFilter,
    LowRankConfig,
    MagnitudePruningConfig,
    TensorTrainConfig,
    TuckerConfig,
    compress_,
)
from aipflow_compress.api import METHOD_CONFIGS, config_from_options
from aipflow_compress.command import _parser
from torch import nn


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.LazyLinear(4))


def test_magnitude_pruning_keeps_the_weights_numpy_ranks_largest_in_the_filtered_layers():
    model = mlp()
    before = copy.deepcopy(model)
    report = compress_(model, MagnitudePruningConfig(sparsity=0.6, scope="layer", layers=LayerFilter(exclude="^4$")))
    assert report.method == "prune" and report.settings == "sparsity 0.6 (layer)" and report.model is model
    for name in ("0", "2"):
        weight = before.get_submodule(name).weight.detach().numpy().ravel()
        pruned = np.zeros_like(weight, dtype=bool)
        pruned[np.argsort(np.abs(weight), kind="stable")[: round(0.6 * weight.size)]] = True
        got = model.get_submodule(name).weight.detach().numpy().ravel()
        assert np.array_equal(got == 0, pruned) and np.array_equal(got[~pruned], weight[~pruned])
    assert torch.equal(model[4].weight, before[4].weight)  # excluded by the filter
    assert not torch.nn.utils.parametrize.is_parametrized(model[0])  # permanent: the export step was taken


@pytest.mark.parametrize(
    "config, kind",
    [
        (LowRankConfig(rank=4, layers=LayerFilter(include="^2$")), nn.Linear),
        (TensorTrainConfig(epsilon=0.5, layers=LayerFilter(include="^2$")), nn.Linear),
        (Int8Config(layers=LayerFilter(include="^2$")), nn.Linear),
        (TuckerConfig(ratio=0.3, layers=LayerFilter(include="^2$")), nn.Conv2d),
        (CPConfig(rank=4, layers=LayerFilter(include="^2$")), nn.Conv2d),
    ],
    ids=lambda value: type(value).__name__ if dataclasses.is_dataclass(value) else "",
)
def test_every_layer_wise_method_touches_only_the_filtered_layers(config, kind):
    model = mlp() if kind is nn.Linear else cnn()
    if kind is nn.Conv2d:
        model(torch.randn(1, 3, 8, 8))  # materialise the lazy head
    before = copy.deepcopy(model)
    compress_(model, config)
    assert compressed(model[2], kind), f"{type(config).__name__} left the included layer as it was"
    assert not compressed(model[0], kind) and torch.equal(model[0].weight, before[0].weight)


def compressed(layer: nn.Module, kind: type) -> bool:
    # replaced by a factorised module, or (torchao) the same module holding a quantized weight tensor
    return type(layer) is not kind or type(layer.weight) is not nn.Parameter


def test_torchao_configs_are_accepted_as_they_are():
    from torchao.quantization import Int8WeightOnlyConfig

    ours, theirs = mlp().eval(), mlp().eval()
    compress_(ours, Int8Config(scheme="int8_weight_only"))
    report = compress_(theirs, Int8WeightOnlyConfig())
    assert report.method == "quantize" and set(report.layers) == {"0", "2", "4"}
    x = torch.randn(8, 24)
    assert torch.equal(ours(x), theirs(x))
    assert not torch.equal(theirs(x), mlp().eval()(x))  # quantized: not the float network


def test_configs_are_frozen_and_the_wrong_config_is_one_line():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MagnitudePruningConfig().sparsity = 0.9
    with pytest.raises(TypeError, match=r"^compress_: config must be one of MagnitudePruningConfig, .*, got dict$"):
        compress_(mlp(), {"sparsity": 0.5})
    with pytest.raises(ValueError, match=r"^LowRankConfig: give one of rank, energy, ratio$"):
        compress_(mlp(), LowRankConfig())


@pytest.mark.parametrize(
    "argv, expected",
    [
        ("--method prune --sparsity 0.7 --scope layer", MagnitudePruningConfig(sparsity=0.7, scope="layer")),
        ("--method quantize --scheme int8_weight_only", Int8Config(scheme="int8_weight_only")),
        ("--method low_rank --energy 0.9", LowRankConfig(energy=0.9)),
        ("--method tucker --ratio 0.5", TuckerConfig(ratio=0.5)),
        ("--method cp --rank 8", CPConfig(rank=8)),
        ("--method tensor_train --epsilon 0.3 --rank 8", TensorTrainConfig(epsilon=0.3, max_rank=8)),
    ],
)
def test_the_command_builds_the_config_python_would(argv, expected):
    options = _parser().parse_args(["--config", "sgd", "--ckpt_path", "x.ckpt", *argv.split()])
    assert config_from_options(options.method, options) == expected
    assert set(METHOD_CONFIGS) == set(_parser()._option_string_actions["--method"].choices)


def test_the_command_refuses_a_factorisation_without_a_size():
    options = argparse.Namespace(ratio=None, energy=None, rank=None)
    with pytest.raises(ValueError, match="give one of --energy, --ratio, --rank"):
        config_from_options("tucker", options)
