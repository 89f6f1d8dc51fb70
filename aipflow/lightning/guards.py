"""Stop a run at the first non-finite loss or monitored metric, with one line saying where (nothing trained on
NaN, no model selected on NaN)."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard(Callback):
    """Raises ``FloatingPointError`` when a training loss is NaN or inf, before its backward pass (so no weight is
    updated from it), and when a metric that a ``ModelCheckpoint`` or ``EarlyStopping`` monitors is NaN or inf after
    validation (a checkpoint selected on NaN is never "best", and early stopping stalls). Under ``16-mixed`` the
    loss check is left to the grad scaler, which skips steps with inf gradients by design."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if str(trainer.precision) == "16-mixed":
            return
        if not bool(torch.isfinite(loss.detach()).all()):
            raise FloatingPointError(
                f"non-finite training loss {float(loss.detach().float().mean())} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}: nothing was updated from it; check the inputs for NaN / inf, or lower "
                "the learning rate"
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        monitors = {
            cb.monitor
            for cb in trainer.callbacks
            if isinstance(cb, (ModelCheckpoint, EarlyStopping)) and getattr(cb, "monitor", None)
        }
        for name in sorted(monitors):
            value = trainer.callback_metrics.get(name)
            if value is not None and not math.isfinite(float(value)):
                when = "in the sanity check" if trainer.sanity_checking else f"after epoch {trainer.current_epoch}"
                raise FloatingPointError(
                    f"the monitored metric {name} is {float(value)} {when}: no model can be selected on it; check the "
                    "validation data for NaN / inf"
                )
