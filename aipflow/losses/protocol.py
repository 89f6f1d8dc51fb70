"""What :class:`~aipflow.tasks.ClassificationTask` expects of a loss: the contract a plugin's loss follows (part of
plugin api 1.0; docs/plugins.md). Duck-typed: a loss need not inherit from anything, ``torch.nn.CrossEntropyLoss``
qualifies as it is."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["IndexedLoss", "NoisyLabelLoss", "TransitionCorrectedLoss"]


@runtime_checkable
class NoisyLabelLoss(Protocol):
    """``loss(logits, targets) -> scalar``: logits ``(B, K)`` (any float dtype; score half precision in fp32, see
    ``aipflow.losses.upcast``), targets ``(B,)`` class ids (the observed, possibly noisy labels). An empty batch
    must give a finite zero that still has a graph. Under SAM / bSAM the loss is evaluated several times per step:
    per-sample state moves only outside ``aipflow.passes.in_extra_pass()``."""

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor: ...


@runtime_checkable
class IndexedLoss(Protocol):
    """A loss with per-sample state (ELR's targets): ``needs_index = True`` makes the task call
    ``loss(logits, targets, index=index)`` with each row's dataset index; a ``num_samples`` left ``None`` is filled
    with the training-set size before training."""

    needs_index: bool
    num_samples: int | None

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor: ...


@runtime_checkable
class TransitionCorrectedLoss(Protocol):
    """A loss corrected with a noise transition matrix ``T[i, j] = P(noisy j | clean i)``: the
    ``TransitionMatrixEstimation`` callback hands it its estimate through ``set_transition_matrix`` (K x K,
    rows summing to one) and reads ``transition_matrix``'s device."""

    transition_matrix: Tensor

    def set_transition_matrix(self, t: Tensor) -> None: ...
