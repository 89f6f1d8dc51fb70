"""Low-rank factorisation of Linear layers by truncated SVD: ``W (out x in) ~= U_r S_r V_r^T`` becomes two layers,
``in -> r`` (``S_r^1/2 V_r^T``) and ``r -> out`` (``U_r S_r^1/2``, with the bias), ``r (in + out)`` weights instead
of ``in * out``. By Eckart-Young the truncation is the best rank-``r`` approximation in the Frobenius norm, with
squared relative error ``1 - energy`` where ``energy = sum_{i<=r} s_i^2 / sum_i s_i^2``.

The rank comes from one of: ``rank`` (fixed), ``energy`` (the smallest rank that keeps at least that share of the
squared singular values), or ``ratio`` (the largest rank whose factors hold at most that share of the layer's
weights). A layer whose factorisation would not save weights is left as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from aipflow_compress._layers import replace_layer, select_layers

__all__ = ["LowRankLinear", "choose_rank", "factorize_linear", "low_rank"]


class LowRankLinear(nn.Sequential):
    """``Linear(in, r, bias=False)`` then ``Linear(r, out)``: a rank-``r`` Linear."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


def choose_rank(
    singular_values: torch.Tensor,
    shape: tuple[int, int],
    rank: int | None = None,
    energy: float | None = None,
    ratio: float | None = None,
    field: str = "low_rank",
) -> int:
    """The rank for one layer of ``shape`` (out, in) with these singular values (descending)."""
    given = [name for name, value in (("rank", rank), ("energy", energy), ("ratio", ratio)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"{field}: give exactly one of rank, energy, ratio (got {given or 'none'})")
    full = min(shape)
    if rank is not None:
        if not 1 <= rank <= full:
            raise ValueError(f"{field}.rank={rank} is outside [1, {full}] for a {shape[0]} x {shape[1]} layer")
        return int(rank)
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"{field}.energy must lie in (0, 1], got {energy}")
        squares = singular_values.double() ** 2
        kept = torch.cumsum(squares, 0) / squares.sum().clamp_min(torch.finfo(torch.float64).tiny)
        # the smallest r with kept[r - 1] >= energy (a tolerance for the last bit of rounding)
        return min(full, int((kept < energy - 1e-12).sum()) + 1)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"{field}.ratio must lie in (0, 1], got {ratio}")
    out_features, in_features = shape
    return max(1, min(full, int(ratio * out_features * in_features // (out_features + in_features))))


@torch.no_grad()
def factorize_linear(
    linear: nn.Linear, rank: int | None = None, energy: float | None = None, ratio: float | None = None
) -> LowRankLinear:
    """The truncated-SVD factorisation of ``linear`` (computed in float64, stored in the layer's dtype)."""
    weight = linear.weight.detach()
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    r = choose_rank(s, tuple(weight.shape), rank, energy, ratio)
    root = s[:r].sqrt()
    layer = LowRankLinear(linear.in_features, linear.out_features, r, bias=linear.bias is not None)
    layer.energy = float((s[:r] ** 2).sum() / (s**2).sum().clamp_min(1e-300))  # the share of the spectrum kept
    layer.to(device=weight.device, dtype=weight.dtype)
    layer[0].weight.copy_((root[:, None] * vh[:r]).to(weight.dtype))
    layer[1].weight.copy_((u[:, :r] * root[None, :]).to(weight.dtype))
    if linear.bias is not None:
        layer[1].bias.copy_(linear.bias)
    return layer


def low_rank(
    model: nn.Module,
    rank: int | None = None,
    energy: float | None = None,
    ratio: float | None = None,
    include: str | None = None,
    exclude: str | None = None,
) -> dict[str, dict]:
    """Replace ``model``'s Linear layers (names matching ``include`` and not ``exclude``, regular expressions) by
    their low-rank factorisations where that saves weights; returns, per layer, the rank, the weights before and
    after and the share of squared singular values kept (``energy``)."""
    report: dict[str, dict] = {}
    targets = select_layers(model, (nn.Linear,), include, exclude, "low_rank", exact_type=True).items()
    for name, linear in targets:
        out_features, in_features = linear.weight.shape
        if rank is not None and rank > min(out_features, in_features):
            raise ValueError(
                f"low_rank.rank={rank} is larger than layer {name} allows ({out_features} x {in_features}: at most "
                f"{min(out_features, in_features)})"
            )
        factor = factorize_linear(linear, rank, energy, ratio)
        before, after = out_features * in_features, factor.rank * (out_features + in_features)
        entry = {"rank": factor.rank, "weights_before": before, "weights_after": after, "energy": factor.energy}
        if after < before:
            replace_layer(model, name, factor)
            entry["replaced"] = True
        else:
            entry.update(weights_after=before, replaced=False)
        report[name] = entry
    return report
