"""Tucker-2 convolutions against numpy in float64: full ranks reproduce the layer; the three convolutions compute
the convolution with the reconstructed kernel ``G x_0 U_out x_1 U_in``; the HOSVD factors are numpy's leading
singular vectors of each mode's unfolding and HOOI improves on them; ranks by energy and by budget; a model's
convolutions replaced where that saves weights; one line for bad input."""

import copy

import numpy as np
import pytest
import torch
from aipflow_compress.tucker import TuckerConv2d, factorize_conv2d, tucker_convs
from torch import nn
from torch.nn import functional as F

from aipflow.models import SmallCNN


def conv(out_channels=12, in_channels=10, seed=0, **options) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, **options).double()


def test_full_ranks_reproduce_the_layer():
    layer = conv(stride=2)
    x = torch.randn(2, 10, 9, 9, dtype=torch.float64)
    tucker = factorize_conv2d(layer, rank=(10, 12))
    assert isinstance(tucker, TuckerConv2d)
    assert torch.allclose(tucker(x), layer(x), atol=1e-10)


def test_the_three_convolutions_compute_the_reconstructed_kernel_and_hosvd_is_numpys():
    layer = conv()
    weight = layer.weight.detach().numpy()
    tucker = factorize_conv2d(layer, rank=(4, 5), iterations=0)
    u_in = tucker[0].weight.detach().numpy()[:, :, 0, 0].T  # C x R_in
    core = tucker[1].weight.detach().numpy()
    u_out = tucker[2].weight.detach().numpy()[:, :, 0, 0]  # S x R_out
    reconstructed = np.einsum("sa,abij,cb->scij", u_out, core, u_in)
    x = torch.randn(3, 10, 7, 7, dtype=torch.float64)
    expected = F.conv2d(x, torch.from_numpy(reconstructed), layer.bias, padding=1)
    assert torch.allclose(tucker(x), expected, atol=1e-10)
    leading_out = np.linalg.svd(weight.reshape(12, -1), full_matrices=False)[0][:, :5]
    leading_in = np.linalg.svd(weight.transpose(1, 0, 2, 3).reshape(10, -1), full_matrices=False)[0][:, :4]
    assert np.allclose(np.abs(leading_out.T @ u_out), np.eye(5), atol=1e-8)  # the same subspace, up to sign
    assert np.allclose(np.abs(leading_in.T @ u_in), np.eye(4), atol=1e-8)


def test_hooi_improves_on_hosvd_where_hosvd_is_not_optimal():
    """A random 16 x 16 x 3 x 3 kernel at rank 4: the truncated HOSVD is not the best Tucker-2 fit, and each HOOI
    round lowers the error (16 x 16 at rank 4: HOSVD 2.172, three rounds 2.096). A HOOI that does not refine
    (its loop never run) gives HOSVD's error and fails."""
    layer = conv(out_channels=16, in_channels=16)
    errors = []
    for iterations in (0, 1, 3):
        tucker = factorize_conv2d(layer, rank=4, iterations=iterations)
        approx = torch.einsum(
            "sa,abij,bc->scij", tucker[2].weight[:, :, 0, 0], tucker[1].weight, tucker[0].weight[:, :, 0, 0]
        )
        errors.append(float((approx - layer.weight).norm().detach()))
    assert errors[0] > errors[1] >= errors[2] - 1e-12
    assert errors[2] < 0.99 * errors[0]


def test_ranks_by_energy_and_by_budget():
    layer = conv()
    weight = layer.weight.detach().numpy()
    s_out = np.linalg.svd(weight.reshape(12, -1), compute_uv=False)
    kept = np.cumsum(s_out**2) / (s_out**2).sum()
    tucker = factorize_conv2d(layer, energy=0.8)
    assert tucker.rank_out == int(np.argmax(kept >= 0.8)) + 1
    budget = factorize_conv2d(layer, ratio=0.3)
    r = budget.rank_in
    assert 10 * r + r * r * 9 + r * 12 <= 0.3 * 12 * 10 * 9 < 10 * (r + 1) + (r + 1) ** 2 * 9 + (r + 1) * 12


def test_a_models_convolutions_are_replaced_where_that_saves_weights():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, in_channels=1, width=16).eval()
    original = copy.deepcopy(model)
    x = torch.randn(2, 1, 8, 8)
    report = tucker_convs(model, ratio=0.5)
    replaced = [name for name, entry in report.items() if entry["replaced"]]
    assert replaced == ["features.0.0", "features.1.0", "features.3.0"]  # every 3x3 convolution
    assert isinstance(model.features[1][0], TuckerConv2d)
    assert all(report[n]["weights_after"] <= 0.5 * report[n]["weights_before"] for n in replaced)
    # the model now computes the original with each replaced kernel reconstructed from its factors, the
    # convolution's bias, stride and padding kept (a dropped bias fails here)
    with torch.no_grad():
        for name in replaced:
            tucker = model.get_submodule(name)
            kernel = torch.einsum(
                "sa,abij,bc->scij", tucker[2].weight[:, :, 0, 0], tucker[1].weight, tucker[0].weight[:, :, 0, 0]
            )
            original.get_submodule(name).weight.copy_(kernel)
    assert torch.allclose(model(x), original(x), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: tucker_convs(nn.Sequential(conv()), rank=20), r"tucker.rank=20 is larger than layer 0 allows"),
        (lambda: factorize_conv2d(conv(), energy=0.0), r"tucker.energy must lie in \(0, 1\], got 0.0"),
        (lambda: factorize_conv2d(nn.Conv2d(4, 4, 3, groups=2)), r"grouped convolution \(groups=2\)"),
        (lambda: tucker_convs(nn.Sequential(nn.Linear(3, 3)), rank=2), "no Conv2d layer of Sequential matches"),
    ],
)
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError, match=message):
        call()
