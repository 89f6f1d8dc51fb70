"""Langevin dynamics over lists of tensors: SGLD (Welling & Teh, ICML 2011) and pSGLD (Li et al., AAAI 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aipflow.optim.functional._backend import compute_dtype, fused_ops, groups

__all__ = ["langevin_update"]


def langevin_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    noises: Sequence[Tensor] | tuple[int, int],
    square_avgs: Sequence[Tensor] | None,
    lr: float,
    weight_decay: float,
    noise_variance: float,
    alpha: float = 0.99,
    eps: float = 1e-5,
    impl: str = "foreach",
) -> None:
    """One Euler-Maruyama step of (preconditioned) Langevin dynamics, in float32 for low-precision parameters:

    SGLD (Welling & Teh 2011): ``theta <- theta - lr (g + wd theta) + sqrt(noise_variance) z``;
    pSGLD (Li et al. 2016), when ``square_avgs`` is given: ``V <- alpha V + (1 - alpha) g^2``,
    ``P = 1 / (eps + sqrt(V))``, ``theta <- theta - lr P (g + wd theta) + sqrt(noise_variance P) z``;

    with ``noise_variance = 2 lr T / N`` (the optimizers compute it) and ``z`` standard normal: ``noises`` (one
    tensor per parameter), or for ``impl="triton"`` a Philox ``(seed, offset)`` from which the kernel draws it.
    """
    if impl == "triton":
        seed, offset = noises
        fused_ops().langevin.langevin_step(
            params, grads, square_avgs, lr, weight_decay, noise_variance, seed, offset, alpha, eps
        )
        return
    if impl == "reference":
        for theta, g, z, i in zip(params, grads, noises, range(len(params)), strict=True):
            dtype = compute_dtype(theta)
            t, g, z = theta.to(dtype), g.to(dtype), z.to(dtype)
            drift = g + weight_decay * t
            if square_avgs is None:
                new = t - lr * drift + noise_variance**0.5 * z
            else:
                v = square_avgs[i]
                v.copy_(alpha * v + (1 - alpha) * g * g)
                precondition = 1.0 / (eps + v.to(dtype).sqrt())
                new = t - lr * precondition * drift + (noise_variance * precondition).sqrt() * z
            theta.copy_(new.to(theta.dtype))
        return
    lists = (params, grads, noises) if square_avgs is None else (params, grads, noises, square_avgs)
    for bucket in groups(*lists):
        ps, gs, zs = bucket[:3]
        dtype = compute_dtype(ps[0])
        ts = [p.to(dtype) for p in ps] if ps[0].dtype != dtype else list(ps)
        drift = [g.to(dtype) for g in gs] if gs[0].dtype != dtype else [g.clone() for g in gs]
        zs = [z.to(dtype) for z in zs] if zs[0].dtype != dtype else list(zs)
        if square_avgs is None:
            torch._foreach_add_(drift, ts, alpha=weight_decay)
            torch._foreach_mul_(drift, -lr)
            torch._foreach_add_(drift, zs, alpha=noise_variance**0.5)
        else:
            vs = bucket[3]
            torch._foreach_mul_(vs, alpha)
            torch._foreach_addcmul_(vs, drift, drift, value=1 - alpha)
            precondition = torch._foreach_sqrt([v.to(dtype) for v in vs] if vs[0].dtype != dtype else vs)
            torch._foreach_add_(precondition, eps)
            torch._foreach_reciprocal_(precondition)
            torch._foreach_add_(drift, ts, alpha=weight_decay)
            torch._foreach_mul_(drift, precondition)
            torch._foreach_mul_(drift, -lr)
            torch._foreach_mul_(precondition, noise_variance)
            torch._foreach_sqrt_(precondition)
            torch._foreach_addcmul_(drift, precondition, zs)
        torch._foreach_add_(ts, drift)
        if ps[0].dtype != dtype:
            torch._foreach_copy_(ps, ts)
