"""Low-rank factorisation against numpy's SVD in float64: the rank an energy threshold or a weight budget gives, the
factorised layer equal to the truncated matrix, the squared relative error equal to the energy left out
(Eckart-Young), layers left alone where factoring saves nothing, and one line for each bad input."""

import copy

import numpy as np
import pytest
import torch
from aipflow_compress.lowrank import LowRankLinear, choose_rank, factorize_linear, low_rank
from torch import nn


def linear_with_spectrum(singular_values, out_features=40, in_features=30, seed=0) -> nn.Linear:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((out_features, len(singular_values))))
    v, _ = np.linalg.qr(rng.standard_normal((in_features, len(singular_values))))
    layer = nn.Linear(in_features, out_features).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(u @ np.diag(singular_values) @ v.T))
    return layer


SPECTRUM = np.array([10.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25] + [0.1] * 22)


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99, 0.999])
def test_the_energy_threshold_gives_the_smallest_rank_that_keeps_it(energy):
    squares = SPECTRUM**2
    kept = np.cumsum(squares) / squares.sum()
    expected = int(np.argmax(kept >= energy)) + 1  # numpy: the first rank whose kept share reaches the threshold
    layer = linear_with_spectrum(SPECTRUM)
    factor = factorize_linear(layer, energy=energy)
    assert factor.rank == expected
    # Eckart-Young: the squared relative Frobenius error is the energy left out
    approx = (factor[1].weight @ factor[0].weight).detach().numpy()
    weight = layer.weight.detach().numpy()
    error = np.linalg.norm(weight - approx) ** 2 / np.linalg.norm(weight) ** 2
    assert error == pytest.approx(1 - kept[expected - 1], abs=1e-12)
    assert 1 - error >= energy


def test_the_factorised_layer_computes_the_truncated_matrix():
    layer = linear_with_spectrum(SPECTRUM)
    factor = factorize_linear(layer, rank=3)
    u, s, vt = np.linalg.svd(layer.weight.detach().numpy(), full_matrices=False)
    truncated = u[:, :3] @ np.diag(s[:3]) @ vt[:3]
    x = np.random.default_rng(1).standard_normal((5, 30))
    expected = x @ truncated.T + layer.bias.detach().numpy()
    assert np.allclose(factor(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-10)
    assert isinstance(factor, LowRankLinear) and factor[0].weight.shape == (3, 30)


def test_a_weight_budget_keeps_the_factors_within_it():
    for ratio in (0.1, 0.25, 0.5):
        rank = choose_rank(torch.ones(30), (40, 30), ratio=ratio)
        assert rank * (40 + 30) <= ratio * 40 * 30 < (rank + 1) * (40 + 30)


def test_low_rank_replaces_only_the_layers_it_shrinks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4))
    x = torch.randn(8, 64)
    report = low_rank(model, energy=1.0)  # full rank: exact, and no saving for either layer
    assert not any(entry["replaced"] for entry in report.values())
    singular = np.linalg.svd(model[0].weight.detach().double().numpy(), compute_uv=False)
    original = copy.deepcopy(model)
    report = low_rank(model, ratio=0.25)
    assert report["0"]["replaced"] and isinstance(model[0], LowRankLinear)
    rank = report["0"]["rank"]
    # the model now computes the original with each replaced weight truncated by numpy's SVD, its bias kept
    for name, entry in report.items():
        if entry["replaced"]:
            layer = original.get_submodule(name)
            u, s, vt = np.linalg.svd(layer.weight.detach().double().numpy(), full_matrices=False)
            r = entry["rank"]
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(u[:, :r] @ np.diag(s[:r]) @ vt[:r]))
    assert torch.allclose(model(x), original(x), atol=1e-5)
    assert report["0"]["energy"] == pytest.approx((singular[:rank] ** 2).sum() / (singular**2).sum(), rel=1e-10)
    assert report["0"]["weights_after"] <= 0.25 * 64 * 128
    assert model(x).shape == (8, 4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: low_rank(m, rank=50), r"low_rank.rank=50 is larger than layer 0 allows \(16 x 32: at most 16\)"),
        (lambda m: low_rank(m, energy=1.5), r"low_rank.energy must lie in \(0, 1\], got 1.5"),
        (lambda m: low_rank(m, rank=2, energy=0.9), "give exactly one of rank, energy, ratio"),
        (lambda m: low_rank(m, rank=2, include="attention"), "no Linear layer of Sequential matches"),
    ],
)
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError, match=message):
        call(nn.Sequential(nn.Linear(32, 16)))
