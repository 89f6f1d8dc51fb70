"""Stop a run with one line saying what happened: at the first non-finite loss or monitored metric (nothing trained
on NaN, no model selected on NaN), and when another process of a multi-process run died."""

from __future__ import annotations

import math
import re

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

__all__ = ["LostProcessExplainer", "NonFiniteGuard"]

# what a collective raises when a peer process is gone: gloo's TCP transport, NCCL's watchdog, torch's own types
_LOST_PEER = re.compile(
    r"Connection (reset|closed) by peer|Broken pipe|NCCL communicator was aborted|Watchdog caught collective|"
    r"remote process exited|DistNetworkError|DistBackendError",
    re.IGNORECASE,
)


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


class LostProcessExplainer(Callback):
    """When a collective fails because another process of the run died (killed, out of memory, a lost node),
    every surviving process raises a transport error ("Connection reset by peer" from gloo, a watchdog abort from
    NCCL) that names neither the cause nor the way back. This callback attaches to that exception the line the
    ``aipflow`` command prints instead: which process stopped, and the checkpoint to resume from.

    No hang: gloo sees the closed connection at once, Lightning's ``ddp`` launcher kills the run within 5 s when a
    child process dies, and NCCL's watchdog aborts after the process-group timeout (``DDPStrategy(timeout=...)``)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size < 2 or not _LOST_PEER.search(f"{type(exception).__name__}: {exception}"):
            return
        last = next((cb.last_model_path for cb in trainer.checkpoint_callbacks if cb.last_model_path), "")
        resume = f"resume with --ckpt_path {last}" if last else "no checkpoint was written yet, so the run starts over"
        exception.aipflow_message = (  # type: ignore[attr-defined]
            f"process {trainer.global_rank} of {trainer.world_size} stopped at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}: another process of this run died (killed, out of memory, or its node lost; see "
            f"its output above); {resume}"
        )
