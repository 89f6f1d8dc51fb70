"""CP convolutions: the four thin convolutions compute the convolution with the kernel the CP factors define
(rebuilt by numpy from the definition; stride and padding in both directions); more rank fits better; the cost
guard refuses, in one line, the kind of layer whose CP-ALS took minutes here; ranks by budget."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("tensorly")

from aipflow_compress.cp import CPConv2d, cp_convs, estimated_gflop, factorize_conv2d_cp  # noqa: E402


def conv(**options) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(6, 8, 3, **options).double()


def cp_kernel(cp: CPConv2d) -> np.ndarray:
    """The kernel the CP factors define, by numpy: the sum of the rank-one terms, term by term."""
    a = cp[3].weight.detach().numpy()[:, :, 0, 0]  # S x R (lambda folded in)
    b = cp[0].weight.detach().numpy()[:, :, 0, 0]  # R x C
    h = cp[1].weight.detach().numpy()[:, 0, :, 0]  # R x kh
    w = cp[2].weight.detach().numpy()[:, 0, 0, :]  # R x kw
    kernel = np.zeros((a.shape[0], b.shape[1], h.shape[1], w.shape[1]))
    for r in range(cp.rank):
        kernel += np.einsum("s,c,h,w->schw", a[:, r], b[r], h[r], w[r])
    return kernel


def test_the_four_convolutions_compute_the_cp_kernel():
    layer = conv(stride=2, padding=1)
    cp = factorize_conv2d_cp(layer, rank=5, iterations=50)
    assert isinstance(cp, CPConv2d)
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    expected = F.conv2d(x, torch.from_numpy(cp_kernel(cp)), layer.bias, stride=2, padding=1)
    assert torch.allclose(cp(x), expected, atol=1e-10)


def test_more_rank_fits_better():
    layer = conv()
    errors = [cp_convs(nn.Sequential(conv()), rank=r, iterations=100)["0"]["relative_error"] for r in (1, 4, 16)]
    assert errors[0] > errors[1] > errors[2]
    assert layer.weight.shape == (8, 6, 3, 3)


def test_the_cost_guard_refuses_a_layer_cp_als_would_take_minutes_on():
    big = nn.Conv2d(384, 1536, 3)
    assert estimated_gflop(big, 200, 100) > 500
    with pytest.raises(ValueError, match=r"cp: rank 200 on a \(1536, 384, 3, 3\) kernel is about \d+ GFLOP of CP-ALS"):
        factorize_conv2d_cp(big, 200)


def test_a_budget_keeps_the_factors_within_it_and_bad_input_is_one_line():
    model = nn.Sequential(conv(padding=1))
    original = copy.deepcopy(model)
    report = cp_convs(model, ratio=0.3, iterations=20)
    assert report["0"]["weights_after"] <= 0.3 * 8 * 6 * 9 and isinstance(model[0], CPConv2d)
    # the model computes the original with the kernel its CP factors define, padding and bias kept
    with torch.no_grad():
        original[0].weight.copy_(torch.from_numpy(cp_kernel(model[0])))
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    assert torch.allclose(model(x), original(x), atol=1e-10)
    with pytest.raises(ValueError, match="cp: give exactly one of rank, ratio"):
        cp_convs(nn.Sequential(conv()), rank=2, ratio=0.5)
    with pytest.raises(ValueError, match=r"cp.ratio must lie in \(0, 1\], got 2"):
        cp_convs(nn.Sequential(conv()), ratio=2)
