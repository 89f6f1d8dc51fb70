"""The noise transition matrix estimated for a loss correction: in the run (Patrini et al. 2017's two stages) or
out of sample before it (cross-fitting, as Confident Learning prescribes)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from aipflow.lightning.cross_fit import out_of_fold_posteriors, training_rows

__all__ = ["TransitionMatrixEstimation"]


class TransitionMatrixEstimation(Callback):
    """Patrini et al. (2017)'s two stages in one run: train ``warmup_epochs`` with the correction's T at the
    identity (plain CE), then estimate T from the model's noisy-class posteriors on the training set and hand it to
    the loss (``ForwardCorrection``, ``BackwardCorrection`` or ``TRevision``: anything with
    ``set_transition_matrix``). The estimate is kept in ``estimate`` and logged as its largest and mean absolute
    distance to the realised T when the data module records one (``noise_report``).

    ``method``: ``"anchor"`` (Patrini et al.: the posterior of the sample at the ``percentile`` of each class's
    confidence; 97 is their robust variant, ``None`` the argmax) or ``"confident_joint"`` (Northcutt et al. 2021;
    uses the training labels, ignores ``percentile``).

    ``cross_fit_folds`` (>= 2): the posteriors come out of sample, as Confident Learning prescribes. Before
    training, fresh copies of the task's network (re-initialised; the run's RNG is untouched) are trained for
    ``warmup_epochs`` with plain cross-entropy and the task's optimizer, each on all folds but one, and predict the
    fold they did not see; T is set before the first epoch and the run itself needs no warm-up. In-sample, a
    network that has begun to fit its noisy labels counts them as clean, so T's diagonal comes out too high and
    the forward-corrected model under-confident. Measured on digits with 20 % symmetric noise (T's diagonal 0.80):
    anchors in-sample after 10 epochs 0.89 (max error 0.16-0.17), the confident joint in-sample 0.83 (0.05-0.06),
    out of 2 folds after 10 epochs 0.78-0.79 (mean error 0.008). 0 (default): the paper's in-run two stages.

    The estimate is kept in ``estimate``, saved in checkpoints (a resumed run does not estimate again) and logged
    as its largest and mean absolute distance to the realised T when the data module records one."""

    def __init__(
        self,
        warmup_epochs: int = 10,
        percentile: float | None = 97.0,
        batch_size: int = 512,
        method: str = "anchor",
        cross_fit_folds: int = 0,
        cross_fit_batch_size: int = 64,
        cross_fit_seed: int = 0,
    ) -> None:
        if warmup_epochs < 1:
            raise ValueError(f"warmup_epochs must be >= 1, got {warmup_epochs}")
        if method not in ("anchor", "confident_joint"):
            raise ValueError(f"method must be 'anchor' or 'confident_joint', got {method!r}")
        if cross_fit_folds == 1 or cross_fit_folds < 0:
            raise ValueError(f"cross_fit_folds must be 0 (off) or >= 2, got {cross_fit_folds}")
        self.warmup_epochs = warmup_epochs
        self.percentile = percentile
        self.batch_size = batch_size
        self.method = method
        self.cross_fit_folds = cross_fit_folds
        self.cross_fit_batch_size = cross_fit_batch_size
        self.cross_fit_seed = cross_fit_seed
        self.estimate: torch.Tensor | None = None
        self.errors: dict[str, float] = {}  # against the realised T, when the data module records it

    def state_dict(self) -> dict:
        return {"estimate": self.estimate}

    def load_state_dict(self, state_dict: dict) -> None:
        self.estimate = state_dict.get("estimate")

    @staticmethod
    def _loss_of(pl_module: L.LightningModule):
        loss = getattr(pl_module, "loss_fn", None)
        if not hasattr(loss, "set_transition_matrix"):
            raise ValueError(
                "TransitionMatrixEstimation needs a loss with set_transition_matrix (ForwardCorrection, "
                f"BackwardCorrection, TRevision), got {type(loss).__name__}"
            )
        return loss

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.cross_fit_folds or self.estimate is not None:  # off, or resumed with its estimate
            return
        from lightning.pytorch.utilities import rank_zero_info

        self._loss_of(pl_module)
        rank_zero_info(
            f"[aipflow] estimating the noise transition matrix ({self.method}): {self.cross_fit_folds}-fold cross-fit, "
            f"{self.warmup_epochs} epochs per fold"
        )
        rows, labels = training_rows(trainer.datamodule.train_set)
        probs = out_of_fold_posteriors(
            pl_module,
            rows,
            labels,
            self.cross_fit_folds,
            self.warmup_epochs,
            self.cross_fit_batch_size,
            self.cross_fit_seed,
            progress=trainer.progress_bar_callback is not None,
            collate=getattr(trainer.datamodule, "collate", None),
        )
        self._set(trainer, pl_module, probs, labels)
        if self.errors:
            rank_zero_info(
                f"[aipflow] estimated T: max error {self.errors['max']:.3f}, mean {self.errors['mean']:.4f} "
                "against the realised T"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cross_fit_folds:
            if trainer.current_epoch == 0 and self.errors:  # estimated before training, logged with its first epoch
                self._log_errors(pl_module)
            return
        if trainer.current_epoch + 1 != self.warmup_epochs:
            return
        self._loss_of(pl_module)
        was_training = pl_module.training
        pl_module.eval()
        posteriors, labels = [], []
        with torch.no_grad():
            dm = trainer.datamodule
            for batch in DataLoader(dm.train_set, self.batch_size, collate_fn=getattr(dm, "collate", None)):
                x = move_data_to_device(batch["x"], pl_module.device)
                posteriors.append(pl_module(x).float().softmax(1).cpu())
                labels.append(batch["y"])  # the noisy training labels
        pl_module.train(was_training)
        self._set(trainer, pl_module, torch.cat(posteriors), torch.cat(labels))
        if self.errors:
            self._log_errors(pl_module)

    def _log_errors(self, pl_module: L.LightningModule) -> None:
        pl_module.log("train/transition_estimate_max_error", self.errors["max"])
        pl_module.log("train/transition_estimate_mean_error", self.errors["mean"])

    def _set(self, trainer: L.Trainer, pl_module: L.LightningModule, probs: torch.Tensor, labels: torch.Tensor):
        from aipflow.losses import estimate_transition_matrix, estimate_transition_matrix_confident_joint

        loss = self._loss_of(pl_module)
        if self.method == "anchor":
            self.estimate = estimate_transition_matrix(probs, self.percentile)
        else:
            self.estimate = estimate_transition_matrix_confident_joint(probs, labels)
        loss.set_transition_matrix(self.estimate.to(loss.transition_matrix.device))
        report = getattr(trainer.datamodule, "noise_report", None)
        if report is not None:
            error = (self.estimate - report.transition_matrix.float()).abs()
            self.errors = {"max": float(error.max()), "mean": float(error.mean())}
