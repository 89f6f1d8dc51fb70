"""Unstructured magnitude pruning: one-shot, global or per layer, and gradual during fit with the cubic sparsity
schedule of Zhu & Gupta ("To prune, or not to prune: exploring the efficacy of pruning for model compression",
ICLR workshop 2018).

A pruned layer keeps its weight as a parameter and gets a mask through ``torch.nn.utils.parametrize``: the forward
pass uses ``weight * mask``, so pruned weights get no gradient, a Bayesian optimizer's posterior samples (IVON,
bSAM) cannot revive them, and the optimizer keeps the same parameter objects. Masks are buffers: checkpoints hold
them, and a resumed run prunes as the uninterrupted one did. :func:`make_permanent` is the explicit export step
(plain ``weight`` tensors with zeros, no parametrization).

Magnitude is ``|weight * mask|``: a pruned weight stays pruned (sparsity only grows). Ties are broken by position
(a stable sort), so the number of zeros is exactly ``round(sparsity * n)``.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.utils import parametrize

from aipflow_compress._layers import select_layers
from aipflow_compress.configs import CompressionReport, LayerFilter, MagnitudePruningConfig

__all__ = [
    "GradualMagnitudePruning",
    "PRUNABLE",
    "SCOPES",
    "cubic_sparsity",
    "magnitude_pruning_",
    "make_permanent",
    "prunable_layers",
    "prune_magnitude",
    "sparsity_of",
]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ("global", "layer")


class _Mask(nn.Module):
    """``weight -> weight * mask``; the mask is a buffer (saved, moved with the module)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def check_sparsity(value: float, field: str) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{field} must lie in [0, 1), got {value}")
    return float(value)


def prunable_layers(model: nn.Module, include: str | None = None, exclude: str | None = None) -> dict[str, nn.Module]:
    """The Linear / Conv layers of ``model`` by name, those whose name matches ``include`` (a regular expression,
    searched) and not ``exclude``."""
    return select_layers(model, PRUNABLE, include, exclude, "pruning")


def _mask_of(layer: nn.Module) -> _Mask:
    if not parametrize.is_parametrized(layer, "weight"):
        parametrize.register_parametrization(layer, "weight", _Mask(layer.weight), unsafe=True)
    for item in layer.parametrizations.weight:
        if isinstance(item, _Mask):
            return item
    raise ValueError(f"pruning: {type(layer).__name__}.weight has another parametrization; cannot add a mask")


def _raw_weight(layer: nn.Module) -> torch.Tensor:
    return layer.parametrizations.weight.original


def _set_masks(scores: list[torch.Tensor], masks: list[_Mask], sparsity: float) -> None:
    """Zero the ``round(sparsity * n)`` smallest scores of the concatenation (stable: ties by position)."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    pruned = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if pruned:
        order = torch.sort(flat, stable=True).indices
        keep[order[:pruned]] = False
    offset = 0
    for score, mask in zip(scores, masks, strict=True):
        mask.mask.copy_(keep[offset : offset + score.numel()].view_as(mask.mask))
        offset += score.numel()


@torch.no_grad()
def prune_magnitude(
    model: nn.Module,
    sparsity: float,
    scope: str = "global",
    include: str | None = None,
    exclude: str | None = None,
) -> dict[str, float]:
    """Prune the smallest-magnitude weights of ``model``'s Linear / Conv layers to ``sparsity``: over all of them
    together (``global``: one threshold, layers end up with different sparsities) or each layer to ``sparsity``
    (``layer``). Already pruned weights stay pruned. Returns each layer's sparsity."""
    check_sparsity(sparsity, "pruning.sparsity")
    if scope not in SCOPES:
        raise ValueError(f"pruning.scope must be one of {SCOPES}, got {scope!r}")
    layers = prunable_layers(model, include, exclude)
    masks = [_mask_of(layer) for layer in layers.values()]
    scores = [(_raw_weight(layer) * m.mask).abs().float() for layer, m in zip(layers.values(), masks, strict=True)]
    if scope == "global":
        _set_masks(scores, masks, sparsity)
    else:
        for score, mask in zip(scores, masks, strict=True):
            _set_masks([score], [mask], sparsity)
    return sparsity_of(model)


def magnitude_pruning_(model: nn.Module, config: MagnitudePruningConfig) -> CompressionReport:
    """:func:`prune_magnitude` as ``config`` says (and the export step when ``config.permanent``), reported."""
    layers = prune_magnitude(model, config.sparsity, config.scope, config.layers.include, config.layers.exclude)
    if config.permanent:
        make_permanent(model)
    return CompressionReport("prune", f"sparsity {config.sparsity} ({config.scope})", layers, model)


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """The share of zero weights of each Linear / Conv layer (pruned or not), by name."""
    return {
        name: float((module.weight == 0).float().mean())
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE)
    }


@torch.no_grad()
def make_permanent(model: nn.Module) -> nn.Module:
    """Replace each mask parametrization by the masked weight itself (zeros in place): the export step."""
    for module in model.modules():
        if isinstance(module, PRUNABLE) and parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def cubic_sparsity(step: int, final: float, initial: float = 0.0, begin: int = 0, end: int = 1000) -> float:
    """Zhu & Gupta's schedule: ``s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0))^3`` for ``t`` in
    ``[t_0, t_end]``; ``s_i`` before, ``s_f`` after. It prunes fast while the network has redundant weights and
    slowly as fewer remain."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1.0 - (step - begin) / (end - begin)) ** 3


class GradualMagnitudePruning(Callback):
    """Gradual magnitude pruning during fit (Zhu & Gupta 2018): every ``frequency`` optimizer steps from
    ``begin_step`` to ``end_step``, the masks are recomputed to the cubic schedule's sparsity, ending at
    ``final_sparsity``; training goes on in between, so the network recovers from each small pruning step.

    Args:
        final_sparsity: the target in [0, 1) (the paper: 0.5 to 0.975).
        initial_sparsity: ``s_i`` (the paper: 0).
        begin_step / end_step: ``t_0`` and ``t_0 + n dt`` in optimizer steps; null ``end_step``: three quarters of
            the run (``trainer.estimated_stepping_batches``), leaving the last quarter to fine-tune at the final
            sparsity; the step is kept in checkpoints, so a run resumed with another ``max_epochs`` keeps its plan.
        frequency: ``dt``, steps between mask updates (the paper: 100 to 1000; 100 here).
        scope: ``global`` (one threshold over the layers) or ``layer`` (each layer to the schedule's sparsity).
        include / exclude: regular expressions on layer names (default: every Linear / Conv layer).
    """

    def __init__(
        self,
        final_sparsity: float = 0.9,
        initial_sparsity: float = 0.0,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        scope: str = "global",
        include: str | None = None,
        exclude: str | None = None,
    ) -> None:
        self.final_sparsity = check_sparsity(final_sparsity, "GradualMagnitudePruning.final_sparsity")
        self.initial_sparsity = check_sparsity(initial_sparsity, "GradualMagnitudePruning.initial_sparsity")
        if initial_sparsity > final_sparsity:
            raise ValueError(
                f"GradualMagnitudePruning.initial_sparsity ({initial_sparsity}) exceeds final_sparsity "
                f"({final_sparsity})"
            )
        if frequency < 1:
            raise ValueError(f"GradualMagnitudePruning.frequency must be >= 1, got {frequency}")
        if scope not in SCOPES:
            raise ValueError(f"GradualMagnitudePruning.scope must be one of {SCOPES}, got {scope!r}")
        if end_step is not None and end_step <= begin_step:
            raise ValueError(f"GradualMagnitudePruning.end_step ({end_step}) must come after begin_step ({begin_step})")
        self.begin_step, self.end_step, self.frequency = int(begin_step), end_step, int(frequency)
        self.scope, self.include, self.exclude = scope, include, exclude
        self._end = end_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the masks exist before a checkpoint is restored (they are in its state dict) and before the optimizer
        # is built (the parametrization keeps the weight's parameter object, which the optimizer then holds)
        for layer in prunable_layers(pl_module, self.include, self.exclude).values():
            _mask_of(layer)

    def state_dict(self) -> dict:
        return {"end_step": self._end}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resumed_end = state_dict.get("end_step")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run keeps the plan it started with, even when max_epochs changed
        self._end = self.end_step if self.end_step is not None else getattr(self, "_resumed_end", None)
        if self._end is None:
            total = trainer.estimated_stepping_batches
            if total == float("inf"):
                raise ValueError("GradualMagnitudePruning: set end_step (the run has no max_steps or max_epochs)")
            self._end = max(self.begin_step + 1, int(0.75 * total))
        rank_zero_info(
            f"[aipflow] pruning to {self.final_sparsity:.0%} ({self.scope}) from step {self.begin_step} to "
            f"{self._end}, every {self.frequency} steps"
        )

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(step, self.final_sparsity, self.initial_sparsity, self.begin_step, self._end)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step < self.begin_step or step > self._end:
            return
        if (step - self.begin_step) % self.frequency and step != self._end:
            return
        # the config `compress_` and the command use, with the masks kept as parametrizations while training goes on
        layers = LayerFilter(self.include, self.exclude)
        config = MagnitudePruningConfig(self.sparsity_at(step), self.scope, permanent=False, layers=layers)
        magnitude_pruning_(pl_module, config)
