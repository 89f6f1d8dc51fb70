"""Early-learning regularisation (Liu et al., NeurIPS 2020).

``loss_i = CE(p_i, y_i) + lam * log(1 - <p_i, t_i>)`` with per-sample targets from temporal ensembling,
``t_i <- beta t_i + (1 - beta) p_i`` (no gradient; p clamped to [1e-4, 1 - 1e-4] and renormalised, as in the
paper). Defaults: lam = 3, beta = 0.7 (their CIFAR-10 setting). Needs each sample's index in the training set,
which aipflow's data modules put in every batch (``index``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from aipflow.losses.robust import _Loss, check_inputs, reduce, upcast
from aipflow.passes import in_extra_pass


class ELR(_Loss):
    """Early-learning regularisation. ``num_samples`` (the training-set size) is filled by the task from the
    data module when left ``None``."""

    needs_index = True

    def __init__(
        self, lam: float = 3.0, beta: float = 0.7, num_samples: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        self.lam, self.beta = lam, beta
        self.num_samples = num_samples
        self.register_buffer("targets", torch.zeros(0), persistent=True)

    def _ensure_targets(self, num_classes: int, device) -> None:
        if self.num_samples is None:
            raise ValueError("ELR needs num_samples (the training-set size); the task fills it from the data module")
        if self.targets.shape != (self.num_samples, num_classes):
            self.targets = torch.zeros(self.num_samples, num_classes, device=device)

    def forward(self, logits: Tensor, target: Tensor, index: Tensor | None = None) -> Tensor:
        check_inputs(logits, target)
        if index is None:
            raise ValueError(
                "ELR needs each sample's index: use a data module whose batches carry 'index' (aipflow's do)"
            )
        self._ensure_targets(logits.shape[1], logits.device)
        p = upcast(logits).softmax(1).clamp(1e-4, 1 - 1e-4)
        if self.training and not in_extra_pass():
            with torch.no_grad():
                p_norm = p / p.sum(1, keepdim=True)
                self.targets[index] = self.beta * self.targets[index] + (1 - self.beta) * p_norm.to(self.targets)
        reg = (1 - (self.targets[index].to(p) * p).sum(1)).log()
        ce = F.cross_entropy(upcast(logits), target, reduction="none")
        return reduce(ce + self.lam * reg, self.reduction)
