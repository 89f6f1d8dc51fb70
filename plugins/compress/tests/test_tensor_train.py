"""Tensor-train Linear layers against numpy in float64: exact at full rank, the forward contraction equal to the
matrix the cores define (rebuilt by numpy from the TT definition), Oseledets' bound ``||W - W_TT|| <= epsilon
||W||``, ranks capped, a model's layers replaced where that saves weights; one line for bad input."""

import copy
import itertools

import numpy as np
import pytest
import torch
from aipflow_compress.tensor_train import TTLinear, factor_dimension, tensor_train_linears, tt_svd
from torch import nn


def weight_from_cores(cores) -> np.ndarray:
    """W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] ... G_d[:, i_d, j_d, :], entry by entry."""
    cores = [c.detach().numpy() for c in cores]
    out_factors, in_factors = [c.shape[1] for c in cores], [c.shape[2] for c in cores]
    weight = np.zeros((int(np.prod(out_factors)), int(np.prod(in_factors))))
    for i in itertools.product(*map(range, out_factors)):
        for j in itertools.product(*map(range, in_factors)):
            product = np.ones((1, 1))
            for k, core in enumerate(cores):
                product = product @ core[:, i[k], j[k], :]
            weight[np.ravel_multi_index(i, out_factors), np.ravel_multi_index(j, in_factors)] = product[0, 0]
    return weight


def test_factors():
    assert (
        factor_dimension(64, 3) == [4, 4, 4] and factor_dimension(12, 2) == [3, 4] and factor_dimension(7, 2) == [1, 7]
    )


def test_full_rank_is_exact_and_the_forward_pass_is_the_cores_matrix():
    torch.manual_seed(0)
    weight = torch.randn(12, 18, dtype=torch.float64)
    cores = tt_svd(weight, [2, 2, 3], [2, 3, 3], epsilon=0.0, max_rank=None)
    assert np.allclose(weight_from_cores(cores), weight.numpy(), atol=1e-10)
    truncated = tt_svd(weight, [2, 2, 3], [2, 3, 3], epsilon=0.0, max_rank=2)
    layer = TTLinear(truncated, torch.arange(12, dtype=torch.float64))
    x = torch.randn(4, 18, dtype=torch.float64)
    expected = x.numpy() @ weight_from_cores(truncated).T + np.arange(12)
    assert np.allclose(layer(x).detach().numpy(), expected, atol=1e-10)
    assert layer.ranks == [2, 2]


def test_the_error_is_within_oseledets_bound_and_shrinks_the_cores_as_it_grows():
    weight = torch.from_numpy(np.random.default_rng(1).standard_normal((64, 64)))
    sizes = []
    for epsilon in (0.05, 0.2, 0.5, 0.8):
        cores = tt_svd(weight, [4, 4, 4], [4, 4, 4], epsilon=epsilon, max_rank=None)
        error = np.linalg.norm(weight_from_cores(cores) - weight.numpy()) / np.linalg.norm(weight.numpy())
        assert error <= epsilon + 1e-12
        sizes.append(sum(c.numel() for c in cores))
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]


def test_a_models_linear_layers_are_replaced_where_that_saves_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    original = copy.deepcopy(model)
    x = torch.randn(3, 64)
    report = tensor_train_linears(model, epsilon=0.5, max_rank=8)
    assert report["0"]["replaced"] and isinstance(model[0], TTLinear)
    assert report["0"]["weights_after"] < report["0"]["weights_before"]
    # the model computes the original with the weight the cores define (numpy, from the definition
    # W[(i1 i2 i3), (j1 j2 j3)] = G1[i1, j1] G2[i2, j2] G3[i3, j3]) and the layer's bias kept (a dropped bias fails)
    with torch.no_grad():
        for name in (name for name, entry in report.items() if entry["replaced"]):
            g1, g2, g3 = (core.detach().double().numpy() for core in model.get_submodule(name).cores)
            weight = np.einsum("aimb,bjnc,ckod->ijkmno", g1, g2, g3)
            target = original.get_submodule(name).weight
            target.copy_(torch.from_numpy(weight.reshape(target.shape)))
    assert torch.allclose(model(x), original(x), atol=1e-5)


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match=r"tensor_train.epsilon must lie in \[0, 1\), got 1.0"):
        tensor_train_linears(nn.Sequential(nn.Linear(8, 8)), epsilon=1.0)
    with pytest.raises(ValueError, match="no Linear layer of Sequential matches"):
        tensor_train_linears(nn.Sequential(nn.Conv2d(1, 1, 1)))
