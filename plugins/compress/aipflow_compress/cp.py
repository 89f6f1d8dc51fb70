"""CP-decomposed convolutions (Lebedev et al., "Speeding-up Convolutional Neural Networks Using Fine-tuned
CP-Decomposition", ICLR 2015): the kernel ``W (S x C x kh x kw)`` is approximated by ``R`` rank-one terms,
``W = sum_r lambda_r a_r (x) b_r (x) h_r (x) w_r``, which is four thin convolutions: a 1x1 ``C -> R`` (``b``),
a depthwise ``kh x 1`` (``h``), a depthwise ``1 x kw`` (``w``) and a 1x1 ``R -> S`` (``lambda a``, with the bias);
the stride and padding of each spatial direction go to its depthwise convolution.

The factors come from CP-ALS (tensorly's ``parafac``, SVD initialisation, float64). CP-ALS on a large kernel is
slow (tltorch's CP of a 384 x 1536 layer ran over 120 s here), so a **cost guard** estimates each layer's
floating-point work, ``iterations x 4 modes x 2 R x size(W)`` for the matricised-tensor-times-Khatri-Rao products
that dominate an ALS sweep, and refuses (one line naming the layer, the estimate and what to lower) above
``max_gflop``; ``max_gflop=None`` lifts it. Grouped and 1x1 convolutions are left as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from aipflow_compress._layers import replace_layer, select_layers

__all__ = ["CPConv2d", "cp_convs", "estimated_gflop", "factorize_conv2d_cp"]


class CPConv2d(nn.Sequential):
    """1x1 ``C -> R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1 ``R -> S``: a rank-``R`` CP convolution."""

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        super().__init__(
            nn.Conv2d(conv.in_channels, rank, 1, bias=False),
            nn.Conv2d(rank, rank, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), groups=rank, bias=False),
            nn.Conv2d(rank, rank, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw), groups=rank, bias=False),
            nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None),
        )
        self.rank = rank


def estimated_gflop(conv: nn.Conv2d, rank: int, iterations: int) -> float:
    """The cost guard's estimate of CP-ALS's work on ``conv``'s kernel, in GFLOP."""
    return iterations * 4 * 2 * rank * conv.weight.numel() / 1e9


@torch.no_grad()
def factorize_conv2d_cp(
    conv: nn.Conv2d, rank: int, iterations: int = 100, max_gflop: float | None = 50.0, seed: int = 0
) -> CPConv2d:
    """The rank-``rank`` CP factorisation of ``conv`` (refused above ``max_gflop`` of estimated work)."""
    if conv.groups != 1 or isinstance(conv.padding, str):
        raise ValueError(
            f"cp: a grouped convolution or string padding ({conv.groups}, {conv.padding!r}) is not handled"
        )
    if rank < 1:
        raise ValueError(f"cp.rank must be >= 1, got {rank}")
    cost = estimated_gflop(conv, rank, iterations)
    if max_gflop is not None and cost > max_gflop:
        raise ValueError(
            f"cp: rank {rank} on a {tuple(conv.weight.shape)} kernel is about {cost:.0f} GFLOP of CP-ALS "
            f"({iterations} iterations), over max_gflop={max_gflop}; lower the rank or the iterations, use Tucker-2, "
            "or set max_gflop=null"
        )
    import tensorly as tl
    from tensorly.decomposition import parafac

    kernel = conv.weight.detach().double().cpu().numpy()
    with tl.backend_context("numpy"):
        weights, (a, b, h, w) = parafac(kernel, rank, n_iter_max=iterations, init="svd", random_state=seed)
    to = dict(dtype=conv.weight.dtype, device=conv.weight.device)
    layer = CPConv2d(conv, rank).to(**to)
    layer[0].weight.copy_(torch.from_numpy(b.T.copy())[:, :, None, None])
    layer[1].weight.copy_(torch.from_numpy(h.T.copy())[:, None, :, None])
    layer[2].weight.copy_(torch.from_numpy(w.T.copy())[:, None, None, :])
    layer[3].weight.copy_(torch.from_numpy((a * weights[None, :]).copy())[:, :, None, None])
    if conv.bias is not None:
        layer[3].bias.copy_(conv.bias)
    return layer


def cp_convs(
    model: nn.Module,
    rank: int | None = None,
    ratio: float | None = None,
    iterations: int = 100,
    max_gflop: float | None = 50.0,
    include: str | None = None,
    exclude: str | None = None,
) -> dict[str, dict]:
    """Replace ``model``'s (ungrouped, k > 1) Conv2d layers by CP convolutions of ``rank`` (or the largest rank
    whose four kernels hold at most ``ratio`` of the layer's weights) where that saves weights; per layer the rank,
    the weights before and after and the kernel's relative error."""
    if (rank is None) == (ratio is None):
        raise ValueError("cp: give exactly one of rank, ratio")
    if ratio is not None and not 0.0 < ratio <= 1.0:
        raise ValueError(f"cp.ratio must lie in (0, 1], got {ratio}")
    report = {}
    for name, conv in select_layers(model, (nn.Conv2d,), include, exclude, "cp", exact_type=True).items():
        if conv.groups != 1 or conv.kernel_size == (1, 1):
            continue
        kh, kw = conv.kernel_size
        per_rank = conv.in_channels + kh + kw + conv.out_channels
        before = conv.weight.numel()
        r = rank if rank is not None else max(1, int(ratio * before // per_rank))
        layer = factorize_conv2d_cp(conv, r, iterations, max_gflop)
        approx = torch.einsum(
            "sr,rc,rh,rw->schw",
            layer[3].weight[:, :, 0, 0].double(),
            layer[0].weight[:, :, 0, 0].double(),
            layer[1].weight[:, 0, :, 0].double(),
            layer[2].weight[:, 0, 0, :].double(),
        )
        error = float((approx - conv.weight.double()).norm() / conv.weight.double().norm())
        after = r * per_rank
        report[name] = {"rank": r, "weights_before": before, "weights_after": min(after, before)}
        report[name].update(relative_error=error, replaced=after < before)
        if after < before:
            replace_layer(model, name, layer)
    return report
