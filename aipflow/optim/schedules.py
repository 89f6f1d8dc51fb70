"""Step-size schedules for Langevin samplers.

``PolynomialDecayLR``: Welling & Teh's (2011) ``epsilon_t = a (b + t)^-gamma``, written relative to the
optimizer's initial rate: ``lr_t = lr_0 (1 + t / b)^-gamma``. With ``gamma`` in (0.5, 1] the steps satisfy the
Robbins-Monro conditions (sum lr_t = inf, sum lr_t^2 < inf) under which SGLD's iterates converge to the posterior.
Step it per optimizer step (``lr_scheduler_interval: step``).
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["PolynomialDecayLR"]


class PolynomialDecayLR(LRScheduler):
    """``lr_t = lr_0 (1 + t / b)^-gamma`` (Welling & Teh 2011); ``b`` in steps, ``gamma`` in [0, 1]."""

    def __init__(self, optimizer: Optimizer, b: float = 1000.0, gamma: float = 0.55, last_epoch: int = -1) -> None:
        if not b > 0:
            raise ValueError(f"PolynomialDecayLR.b must be > 0, got {b}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"PolynomialDecayLR.gamma must lie in [0, 1], got {gamma}")
        self.b, self.gamma = float(b), float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = (1.0 + self.last_epoch / self.b) ** -self.gamma
        return [base * factor for base in self.base_lrs]
