"""Tucker-2 decomposition of convolutions (Kim et al., "Compression of Deep Convolutional Neural Networks for Fast
and Low Power Mobile Applications", ICLR 2016): the kernel ``W (S x C x k x k)`` is approximated as
``G x_0 U_out x_1 U_in`` with ``U_out (S x R_out)``, ``U_in (C x R_in)`` and a core ``G (R_out x R_in x k x k)``,
which is three convolutions: a 1x1 ``C -> R_in`` (``U_in^T``), the ``k x k`` core ``R_in -> R_out`` (the original
stride, padding and dilation), and a 1x1 ``R_out -> S`` (``U_out``, with the bias).

The factors come from the truncated higher-order SVD of the two channel modes (the leading left singular vectors
of each mode's unfolding), refined by ``iterations`` rounds of higher-order orthogonal iteration (HOOI), all in
float64. Ranks per mode: fixed (``rank``), by ``energy`` (the smallest rank keeping that share of the mode
unfolding's squared singular values; Kim et al. chose ranks by variational Bayesian matrix factorisation, which
is not done here), or by ``ratio`` (equal ranks, the largest whose three kernels hold at most that share of the
layer's weights). Grouped convolutions are left as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aipflow_compress._layers import replace_layer, select_layers
from aipflow_compress.lowrank import choose_rank

__all__ = ["TuckerConv2d", "factorize_conv2d", "tucker_convs"]


class TuckerConv2d(nn.Sequential):
    """1x1 ``C -> R_in``, ``k x k`` ``R_in -> R_out``, 1x1 ``R_out -> S``: a Tucker-2 convolution."""

    def __init__(self, conv: nn.Conv2d, rank_in: int, rank_out: int) -> None:
        super().__init__(
            nn.Conv2d(conv.in_channels, rank_in, 1, bias=False),
            nn.Conv2d(
                rank_in,
                rank_out,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                padding_mode=conv.padding_mode,
                bias=False,
            ),
            nn.Conv2d(rank_out, conv.out_channels, 1, bias=conv.bias is not None),
        )
        self.rank_in, self.rank_out = rank_in, rank_out


def _leading(unfolding: torch.Tensor, rank: int) -> torch.Tensor:
    return torch.linalg.svd(unfolding, full_matrices=False)[0][:, :rank]


def _ratio_rank(out_channels: int, in_channels: int, area: int, ratio: float) -> int:
    """The largest equal rank r with ``C r + r^2 k^2 + r S <= ratio S C k^2``."""
    budget = ratio * out_channels * in_channels * area
    linear = in_channels + out_channels
    r = (-linear + math.sqrt(linear**2 + 4 * area * budget)) / (2 * area)
    return max(1, min(out_channels, in_channels, int(r)))


@torch.no_grad()
def factorize_conv2d(
    conv: nn.Conv2d,
    rank: int | tuple[int, int] | None = None,
    energy: float | None = None,
    ratio: float | None = None,
    iterations: int = 2,
) -> TuckerConv2d:
    """The Tucker-2 factorisation of ``conv``; ``rank`` may be one rank or ``(rank_in, rank_out)``."""
    if conv.groups != 1:
        raise ValueError(f"tucker: a grouped convolution (groups={conv.groups}) has no Tucker-2 form here")
    weight = conv.weight.detach().double()
    out_channels, in_channels = weight.shape[:2]
    area = weight.shape[2] * weight.shape[3]
    mode_out = weight.reshape(out_channels, -1)
    mode_in = weight.transpose(0, 1).reshape(in_channels, -1)
    if ratio is not None and rank is None and energy is None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"tucker.ratio must lie in (0, 1], got {ratio}")
        rank_in = rank_out = _ratio_rank(out_channels, in_channels, area, ratio)
    else:
        ranks = (rank, rank) if not isinstance(rank, (tuple, list)) else tuple(rank)
        rank_in = choose_rank(
            torch.linalg.svdvals(mode_in), (in_channels, mode_in.shape[1]), ranks[0], energy, ratio, "tucker"
        )
        rank_out = choose_rank(
            torch.linalg.svdvals(mode_out), (out_channels, mode_out.shape[1]), ranks[1], energy, ratio, "tucker"
        )
    u_out, u_in = _leading(mode_out, rank_out), _leading(mode_in, rank_in)
    for _ in range(iterations):  # HOOI: each factor from the kernel projected on the other
        projected = torch.einsum("scij,cr->srij", weight, u_in).reshape(out_channels, -1)
        u_out = _leading(projected, rank_out)
        projected = torch.einsum("scij,sr->crij", weight, u_out).reshape(in_channels, -1)
        u_in = _leading(projected, rank_in)
    core = torch.einsum("scij,sa,cb->abij", weight, u_out, u_in)
    layer = TuckerConv2d(conv, rank_in, rank_out).to(device=conv.weight.device, dtype=conv.weight.dtype)
    layer[0].weight.copy_(u_in.T[:, :, None, None])
    layer[1].weight.copy_(core)
    layer[2].weight.copy_(u_out[:, :, None, None])
    if conv.bias is not None:
        layer[2].bias.copy_(conv.bias)
    return layer


def tucker_convs(
    model: nn.Module,
    rank: int | None = None,
    energy: float | None = None,
    ratio: float | None = None,
    include: str | None = None,
    exclude: str | None = None,
    iterations: int = 2,
) -> dict[str, dict]:
    """Replace ``model``'s (ungrouped, k > 1) Conv2d layers by their Tucker-2 factorisations where that saves
    weights; per layer the ranks, the weights before and after, and the relative error of the kernel."""
    report: dict[str, dict] = {}
    targets = select_layers(model, (nn.Conv2d,), include, exclude, "tucker", exact_type=True)
    for name, conv in targets.items():
        if conv.groups != 1 or conv.kernel_size == (1, 1):
            continue
        out_channels, in_channels = conv.out_channels, conv.in_channels
        if rank is not None and rank > min(out_channels, in_channels):
            raise ValueError(
                f"tucker.rank={rank} is larger than layer {name} allows ({out_channels} x {in_channels} channels)"
            )
        layer = factorize_conv2d(conv, rank, energy, ratio, iterations)
        area = conv.kernel_size[0] * conv.kernel_size[1]
        before = out_channels * in_channels * area
        after = in_channels * layer.rank_in + layer.rank_in * layer.rank_out * area + layer.rank_out * out_channels
        approx = torch.einsum(
            "sa,abij,bc->scij",
            layer[2].weight[:, :, 0, 0].double(),
            layer[1].weight.double(),
            layer[0].weight[:, :, 0, 0].double(),
        )
        error = float((approx - conv.weight.double()).norm() / conv.weight.double().norm())
        entry = {"ranks": (layer.rank_in, layer.rank_out), "weights_before": before, "weights_after": after}
        entry.update(relative_error=error, replaced=after < before)
        if after < before:
            replace_layer(model, name, layer)
        else:
            entry["weights_after"] = before
        report[name] = entry
    return report
