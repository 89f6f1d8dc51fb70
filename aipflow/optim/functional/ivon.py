"""IVON (Shen et al., ICML 2024, Alg. 1) over lists of tensors: the momentum, Hessian and mean update."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aipflow.optim.functional._backend import groups

__all__ = ["ivon_update"]


def ivon_update(
    params: Sequence[Tensor],
    g_hats: Sequence[Tensor],
    h_hats: Sequence[Tensor],
    momenta: Sequence[Tensor],
    hessians: Sequence[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    step: int,
    clip_radius: float,
    impl: str = "foreach",
) -> None:
    """IVON's update (Shen et al. 2024, Alg. 1), params holding the mean m:

    ``g <- b1 g + (1-b1) g_hat``;
    ``h <- b2 h + (1-b2) h_hat + 0.5 (1-b2)^2 (h - h_hat)^2 / (h + delta)``;
    ``m <- m - lr clip((g / (1 - b1^t) + delta m) / (h + delta), clip_radius)``.
    """
    debias = 1 - beta1**step
    if impl == "reference":
        for m, gh, hh, g, h in zip(params, g_hats, h_hats, momenta, hessians, strict=True):
            g.mul_(beta1).add_((1 - beta1) * gh)
            h.copy_(beta2 * h + (1 - beta2) * hh + 0.5 * (1 - beta2) ** 2 * (h - hh) ** 2 / (h + weight_decay))
            m32 = m.float()
            upd = (g / debias + weight_decay * m32) / (h + weight_decay)
            if clip_radius != float("inf"):
                upd = upd.clamp(-clip_radius, clip_radius)
            m.copy_((m32 - lr * upd).to(m.dtype))
        return
    for ms, ghs, hhs, gs, hs in groups(params, g_hats, h_hats, momenta, hessians):
        ghs = [g.float() for g in ghs] if ghs[0].dtype != torch.float32 else ghs
        torch._foreach_lerp_(gs, ghs, 1 - beta1)
        diff = torch._foreach_sub(hs, hhs)
        torch._foreach_mul_(diff, diff)
        denom = torch._foreach_add(hs, weight_decay)
        torch._foreach_div_(diff, denom)
        torch._foreach_lerp_(hs, hhs, 1 - beta2)
        torch._foreach_add_(hs, diff, alpha=0.5 * (1 - beta2) ** 2)
        m32 = [m.float() for m in ms] if ms[0].dtype != torch.float32 else list(ms)
        upd = torch._foreach_mul(m32, weight_decay)
        torch._foreach_add_(upd, gs, alpha=1 / debias)
        torch._foreach_div_(upd, torch._foreach_add(hs, weight_decay))
        if clip_radius != float("inf"):
            torch._foreach_clamp_min_(upd, -clip_radius)
            torch._foreach_clamp_max_(upd, clip_radius)
        if ms[0].dtype == torch.float32:
            torch._foreach_add_(ms, upd, alpha=-lr)
        else:
            torch._foreach_add_(m32, upd, alpha=-lr)
            torch._foreach_copy_(ms, m32)
