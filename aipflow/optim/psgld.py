"""pSGLD: preconditioned stochastic gradient Langevin dynamics (Li, Chen, Carlson & Carin, "Preconditioned
Stochastic Gradient Langevin Dynamics for Deep Neural Networks", AAAI 2016).

SGLD with RMSprop's diagonal preconditioner, in the drift and in the noise::

    V <- alpha V + (1 - alpha) g * g                       (g: the mini-batch gradient of the mean loss)
    P = 1 / (eps + sqrt(V))
    theta <- theta - lr P (g + wd theta) + sqrt(2 lr T P / N) z,   z ~ N(0, I)

Like Li et al. (their section 3, "in practice"), the correction term Gamma(theta) (the divergence of P, small
when alpha is close to 1) is left out. ``temperature``, ``train_size`` and the sample collector are SGLD's (see
:mod:`aipflow.optim.sgld`).

Defaults: the paper's alpha 0.99 and eps 1e-5; lr 1e-3; temperature 1; burn-in 0, thinning 100, 20 samples.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from aipflow.optim._base import check_beta, check_positive
from aipflow.optim._langevin import LangevinOptimizer

__all__ = ["PSGLD"]


class PSGLD(LangevinOptimizer):
    """Preconditioned SGLD. ``train_size`` (N) is filled by aipflow's Lightning integration when left ``None``."""

    preconditioned = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        alpha: float = 0.99,
        eps: float = 1e-5,
        temperature: float = 1.0,
        weight_decay: float = 0.0,
        train_size: float | None = None,
        burn_in: int = 0,
        thinning: int = 100,
        max_samples: int = 20,
        seed: int | None = None,
        impl: str = "auto",
    ) -> None:
        check_beta("alpha", alpha)
        check_positive("eps", eps)
        defaults = dict(lr=lr, weight_decay=weight_decay, alpha=alpha, eps=eps)
        super().__init__(params, defaults, temperature, train_size, burn_in, thinning, max_samples, seed, impl)
