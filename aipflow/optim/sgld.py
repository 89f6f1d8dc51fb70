"""SGLD: stochastic gradient Langevin dynamics (Welling & Teh, "Bayesian Learning via Stochastic Gradient
Langevin Dynamics", ICML 2011).

Each step follows the mini-batch gradient and adds Gaussian noise of variance ``2 lr T / N`` to the weights::

    theta <- theta - lr (grad L(theta) + wd theta) + sqrt(2 lr T / N) z,   z ~ N(0, I)

so that, with a decreasing step (``PolynomialDecayLR``: Welling & Teh's ``a (b + t)^-gamma``) or a small constant
one, the iterates sample ``exp(-(N / T)(L + wd/2 ||theta||^2))`` (the posterior at ``T = 1``; see
:mod:`aipflow.optim._langevin` for the correspondence with the SDE ``dX = -grad(L + lambda/2 ||X||^2) dt +
sqrt(2 / beta) dW``). ``temperature=0`` is plain gradient descent. The states after ``burn_in`` steps, every
``thinning``-th, are kept (``max_samples`` at most) and averaged by the task's posterior predictive
(``posterior_samples``), as with IVON.

Defaults: lr 1e-3 of the mean loss (Welling & Teh's epsilon = 2 lr / N), temperature 1, no weight decay,
burn-in 0, thinning 100, 20 samples.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from aipflow.optim._langevin import LangevinOptimizer

__all__ = ["SGLD"]


class SGLD(LangevinOptimizer):
    """Stochastic gradient Langevin dynamics. ``train_size`` (N) is filled by aipflow's Lightning integration
    when left ``None``."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        temperature: float = 1.0,
        weight_decay: float = 0.0,
        train_size: float | None = None,
        burn_in: int = 0,
        thinning: int = 100,
        max_samples: int = 20,
        seed: int | None = None,
        impl: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay)
        super().__init__(params, defaults, temperature, train_size, burn_in, thinning, max_samples, seed, impl)
