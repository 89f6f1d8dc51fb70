"""bSAM (Moellenhoff & Khan, ICLR 2023) over lists of tensors: the posterior sample, the perturbed point and the
descent of the mean and precision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aipflow.optim.functional._backend import groups

__all__ = ["bsam_noisy_point", "bsam_perturbed_point", "bsam_update", "gaussian_like"]


def gaussian_like(tensors: Sequence[Tensor], generator_for) -> list[Tensor]:
    """Standard normal noise shaped like each tensor, drawn in order from ``generator_for(device)``."""
    return [
        torch.randn(t.shape, dtype=torch.float32, device=t.device, generator=generator_for(t.device)) for t in tensors
    ]


def bsam_noisy_point(
    params: Sequence[Tensor], means: Sequence[Tensor], precisions: Sequence[Tensor], noise: Sequence[Tensor], n: float
) -> None:
    """``theta = m + z / sqrt(N s)`` (Moellenhoff & Khan 2023, the posterior sample of bSAM)."""
    for p, m, s, z in zip(params, means, precisions, noise, strict=True):
        p.copy_((m.float() + z * torch.rsqrt(n * s)).to(p.dtype))


def bsam_perturbed_point(
    params: Sequence[Tensor],
    means: Sequence[Tensor],
    grads: Sequence[Tensor],
    precisions: Sequence[Tensor],
    h_sums: Sequence[Tensor],
    rho: float,
    impl: str = "foreach",
) -> None:
    """``theta = m + rho g / s`` (elementwise, no normalisation) and ``h_sum += sqrt(s) |g|``."""
    if impl == "reference":
        for p, m, g, s, hs in zip(params, means, grads, precisions, h_sums, strict=True):
            g32 = g.float()
            hs.add_(s.sqrt() * g32.abs())
            p.copy_((m.float() + rho * g32 / s).to(p.dtype))
        return
    for ps, ms, gs, ss, hss in groups(params, means, grads, precisions, h_sums):
        g32 = [g.float() for g in gs] if gs[0].dtype != torch.float32 else list(gs)
        abs_g = torch._foreach_abs(g32)
        torch._foreach_addcmul_(hss, torch._foreach_sqrt(ss), abs_g)
        eps = torch._foreach_div(g32, ss)
        torch._foreach_mul_(eps, rho)
        if ps[0].dtype == torch.float32:
            torch._foreach_add_(eps, ms)
            torch._foreach_copy_(ps, eps)
        else:
            torch._foreach_add_(eps, [m.float() for m in ms])
            torch._foreach_copy_(ps, eps)


def bsam_update(
    params: Sequence[Tensor],
    grad_means: Sequence[Tensor],
    h_means: Sequence[Tensor],
    momenta: Sequence[Tensor],
    precisions: Sequence[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    damping: float,
    delta: float,
    impl: str = "foreach",
) -> None:
    """bSAM's descent (params hold the mean m):

    ``gbar <- b1 gbar + (1-b1)(g_eps + delta m)``; ``m <- m - lr gbar / s`` (old s);
    ``s <- b2 s + (1-b2)(h + damping + delta)``.
    """
    if impl == "reference":
        for m, g, h, gbar, s in zip(params, grad_means, h_means, momenta, precisions, strict=True):
            m32 = m.float()
            gbar.mul_(beta1).add_((1 - beta1) * (g.float() + delta * m32))
            m.copy_((m32 - lr * gbar / s).to(m.dtype))
            s.mul_(beta2).add_((1 - beta2) * (h + damping + delta))
        return
    for ms, gs, hs, gbars, ss in groups(params, grad_means, h_means, momenta, precisions):
        m32 = [m.float() for m in ms] if ms[0].dtype != torch.float32 else list(ms)
        g32 = [g.float() for g in gs] if gs[0].dtype != torch.float32 else list(gs)
        d = torch._foreach_mul(m32, delta)
        torch._foreach_add_(d, g32)
        torch._foreach_lerp_(gbars, d, 1 - beta1)  # b1 gbar + (1 - b1) d
        step = torch._foreach_div(gbars, ss)
        if ms[0].dtype == torch.float32:
            torch._foreach_add_(ms, step, alpha=-lr)
        else:
            torch._foreach_add_(m32, step, alpha=-lr)
            torch._foreach_copy_(ms, m32)
        target = torch._foreach_add(hs, damping + delta)
        torch._foreach_lerp_(ss, target, 1 - beta2)
