"""Supervised classification with everything from config: network, loss, optimizer, LR scheduler."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from aipflow.metrics import DEFAULT_ECE_BINS, plot_reliability_diagram
from aipflow.sizes import require_size
from aipflow.tasks.base import Task

_STAGES = ("train", "val", "test")
POSTERIOR_ECE_BINS = 20  # as reported in the bSAM paper


def _index(batch) -> torch.Tensor | None:
    return batch.get("index") if isinstance(batch, dict) else None


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["x"], batch["y"]
    x, y = batch[0], batch[1]
    return x, y


class ClassificationTask(Task):
    """Classification LightningModule.

    Logs ``{train,val,test}/acc``, ``/nll`` (mean cross-entropy against the labels given: noisy on train, clean on
    val/test) and ``/ece`` (top-label, L1, ``ece_bins`` equal-width bins; 15 by default), plus ``train/loss`` (the
    optimised loss). At test end it writes a reliability diagram PNG into the logger's folder.

    Args:
        model: the network, ``(N, ...) -> (N, num_classes)`` logits.
        loss: training loss module taking ``(logits, targets)``; cross-entropy when omitted.
        num_classes: the number of classes (checked against the data module's ``num_classes`` when it has one;
            null: the command takes it from the data, see :mod:`aipflow.sizes`).
        ece_bins: number of bins for ECE and the reliability diagram.
        posterior_samples: with a Bayesian optimizer (bSAM, IVON) or a Langevin sampler (SGLD, pSGLD: draws
            from its collected samples), val/test also report the posterior predictive over this many samples:
            ``{val,test}/pp_acc``, ``/pp_nll`` (log-mean-exp over samples) and ``/pp_ece`` (20 bins, as the bSAM
            paper); 0 turns it off. When testing from a checkpoint the
            posterior comes from that checkpoint's optimizer state.
        posterior_seed: seed of the posterior samples drawn for evaluation (fixed: comparable across epochs).
        sample_weights: weight each training row's loss by the batch's ``weight`` (a data module's weight column,
            e.g. annotator agreement): ``sum w_i l_i / sum w_i``.
        **kwargs: :class:`aipflow.tasks.Task`'s ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``.

    A subclass declares only what it adds and hands the rest on (see :mod:`aipflow.tasks.base`).
    """

    #: whether the training loss honours ``sample_weights`` (a scheme that weighs or selects rows itself does not)
    accepts_sample_weights: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module | None = None,
        num_classes: int | None = 10,
        ece_bins: int = DEFAULT_ECE_BINS,
        reliability_diagram: bool = True,
        posterior_samples: int = 0,
        posterior_seed: int = 0,
        sample_weights: bool = False,
        **kwargs,
    ) -> None:
        num_classes = require_size(num_classes, "model.num_classes")
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2, got {num_classes}")
        if ece_bins < 1:
            raise ValueError(f"model.ece_bins must be >= 1, got {ece_bins}")
        if posterior_samples < 0:
            raise ValueError(f"model.posterior_samples must be >= 0, got {posterior_samples}")
        if sample_weights and not self.accepts_sample_weights:
            raise ValueError(
                f"model.sample_weights: {type(self).__name__} weighs or selects its training rows itself, so it "
                "cannot also take the data's row weights; set sample_weights: false"
            )
        super().__init__(model, **kwargs)
        self.loss_fn = loss if loss is not None else nn.CrossEntropyLoss()
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    {
                        "acc": MulticlassAccuracy(num_classes, average="micro"),
                        "ece": MulticlassCalibrationError(num_classes, n_bins=ece_bins, norm="l1"),
                        "nll": MeanMetric(),
                    }
                )
                for stage in _STAGES
            }
        )
        if posterior_samples:
            for stage in ("val", "test"):
                self.metrics[f"{stage}_metrics"].add_metrics(
                    {
                        "pp_acc": MulticlassAccuracy(num_classes, average="micro"),
                        "pp_ece": MulticlassCalibrationError(num_classes, n_bins=POSTERIOR_ECE_BINS, norm="l1"),
                        "pp_nll": MeanMetric(),
                    }
                )
        self._posterior_generator: torch.Generator | None = None
        self._checkpoint_optimizer_states: list | None = None
        self._evaluation_optimizer = None
        self._test_probs: list[torch.Tensor] = []
        self._test_labels: list[torch.Tensor] = []
        self.reliability_diagram_path: Path | None = None
        #: names the run in plots (the ``aipflow`` command sets the recipe's name)
        self.run_label: str | None = None

    @property
    def probabilities_description(self) -> str:
        """Which probabilities test/acc, test/nll, test/ece and the reliability diagram are computed from."""
        loss = type(self.loss_fn).__name__
        return f"softmax of the network's logits (point estimate; trained with {loss})"

    def check_options(self, optimizer: torch.optim.Optimizer | None) -> None:
        """``posterior_samples`` needs a Bayesian optimizer to sample from."""
        from aipflow.config import ConfigError

        samples = self.hparams.posterior_samples
        if samples and optimizer is not None and not hasattr(optimizer, "sampled_params"):
            raise ConfigError(
                f"model.init_args.posterior_samples: {samples} needs a Bayesian optimizer to sample the posterior "
                f"from (IVON, BSAM, SGLD, PSGLD), but the optimizer is {type(optimizer).__name__}; set "
                "posterior_samples: 0"
            )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        found = getattr(dm, "num_classes", None)
        if found is not None and found != self.hparams.num_classes:
            raise ValueError(f"model.num_classes is {self.hparams.num_classes} but the data has {found} classes")
        if getattr(self.loss_fn, "needs_index", False) and getattr(self.loss_fn, "num_samples", 0) is None:
            size = getattr(dm, "train_size", None)
            if not size:
                raise ValueError(
                    f"{type(self.loss_fn).__name__} needs per-sample indices and the training-set size, but the data "
                    "module has no train_size; use a data module whose batches carry 'index' (aipflow's do)"
                )
            self.loss_fn.num_samples = int(size)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self(x)
        if logits.ndim != 2 or logits.shape[1] != self.hparams.num_classes:
            raise ValueError(
                f"the network must return (batch, {self.hparams.num_classes}) logits, got {tuple(logits.shape)}"
            )
        return logits

    def _update_metrics(self, stage: str, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None) -> None:
        logits = logits.detach().float()
        metrics = self.metrics[f"{stage}_metrics"]
        metrics["acc"].update(logits, y)
        metrics["ece"].update(logits.softmax(1), y)
        metrics["nll"].update(nn.functional.cross_entropy(logits, y, reduction="none"))
        if x is not None and self.hparams.posterior_samples:
            self._update_posterior_metrics(metrics, x, y)
        self.log_dict(
            {f"{stage}/{k}": m for k, m in metrics.items()}, on_step=False, on_epoch=True, prog_bar=stage != "train"
        )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = _unpack(batch)
        logits = self._logits(x)
        loss = self.training_loss(logits, y, batch)  # a non-finite one stops the run (NonFiniteGuard)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self._update_metrics("train", logits, y)
        return loss

    def training_loss(self, logits: torch.Tensor, y: torch.Tensor, batch) -> torch.Tensor:
        """The configured loss on one training batch (with the batch's row weights or sample indices when the loss
        or ``sample_weights`` asks for them): the term a subclass adds to (distillation, regularisers)."""
        weight = batch.get("weight") if isinstance(batch, dict) and self.hparams.sample_weights else None
        if weight is not None:
            return self._weighted_loss(logits, y, weight, batch)
        if getattr(self.loss_fn, "needs_index", False):
            index = _index(batch)
            if index is None:
                raise ValueError(
                    f"{type(self.loss_fn).__name__} needs each sample's index, but the batches carry none: use a "
                    "data module whose batches are dicts with an 'index' entry (aipflow's data modules do)"
                )
            return self.loss_fn(logits, y, index=index)
        return self.loss_fn(logits, y)

    def _weighted_loss(self, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, batch) -> torch.Tensor:
        """``sum_i w_i l_i / sum_i w_i``: the loss per row, weighted by the batch's ``weight`` (e.g. annotator
        agreement)."""
        per_row = self.per_example_loss(logits, y, field="model.sample_weights")
        weight = weight.to(per_row.dtype)
        return (weight * per_row).sum() / weight.sum().clamp_min(torch.finfo(per_row.dtype).tiny)

    def per_example_loss(self, logits: torch.Tensor, y: torch.Tensor, field: str = "model.loss") -> torch.Tensor:
        """The configured loss of each row (the loss module's ``reduction`` set to ``"none"`` for the call): what
        row weights (``sample_weights``, a reweighting scheme) multiply. Losses with per-sample state (ELR) and
        losses without a ``reduction`` option are refused in one line naming ``field``."""
        name = type(self.loss_fn).__name__
        if getattr(self.loss_fn, "needs_index", False):
            raise ValueError(
                f"{field}: {name} keeps per-sample state, which row weights would skew; use a loss "
                "without (CE, GCE, SCE, NCE+RCE, ...)"
            )
        if not hasattr(self.loss_fn, "reduction"):
            raise ValueError(
                f"{field}: {name} gives no per-row losses (no reduction option); use a loss that has "
                "one (CE, GCE, SCE, NCE+RCE, ...)"
            )
        reduction, self.loss_fn.reduction = self.loss_fn.reduction, "none"
        try:
            return self.loss_fn(logits, y)
        finally:
            self.loss_fn.reduction = reduction

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = _unpack(batch)
        self._update_metrics("val", self._logits(x), y, x)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = _unpack(batch)
        logits = self._logits(x)
        self._update_metrics("test", logits, y, x)
        if self.hparams.reliability_diagram:
            self._test_probs.append(logits.detach().float().softmax(1).cpu())
            self._test_labels.append(y.cpu())

    # ------------------------------------------------------------------------------- posterior predictive
    def on_validation_epoch_start(self) -> None:
        self._posterior_generator = None

    def on_test_epoch_start(self) -> None:
        self._posterior_generator = None
        self._test_probs.clear()
        self._test_labels.clear()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._checkpoint_optimizer_states = checkpoint.get("optimizer_states")
        self._evaluation_optimizer = None

    def _bayesian_optimizer(self):
        """The live optimizer while fitting; otherwise one rebuilt from the loaded checkpoint's state."""
        if self.trainer.training or self.trainer.state.fn == "fit":
            for opt in self.trainer.optimizers:
                if hasattr(opt, "sampled_params"):
                    return opt
        if self._evaluation_optimizer is None and self._checkpoint_optimizer_states:
            built = self.configure_optimizers()
            opt = built["optimizer"] if isinstance(built, dict) else built
            if hasattr(opt, "sampled_params"):
                opt.load_state_dict(self._checkpoint_optimizer_states[0])
                self._evaluation_optimizer = opt
        if self._evaluation_optimizer is None:
            for opt in self.trainer.optimizers:
                if hasattr(opt, "sampled_params"):
                    return opt
        return self._evaluation_optimizer

    def _posterior_log_predictive(self, x: torch.Tensor) -> torch.Tensor | None:
        """``log (1/S) sum_s p(y | x, theta_s)`` over ``posterior_samples`` draws from the optimizer's posterior
        (fixed seed), or ``None`` without a Bayesian optimizer."""
        opt = self._bayesian_optimizer()
        if opt is None:
            return None
        if self._posterior_generator is None:
            self._posterior_generator = torch.Generator(device=self.device).manual_seed(self.hparams.posterior_seed)
        samples = self.hparams.posterior_samples
        log_probs = []
        for _ in range(samples):
            with opt.sampled_params(generator=self._posterior_generator):
                log_probs.append(self(x).float().log_softmax(1))
        # log of the average predictive probability, by log-sum-exp (stable when probabilities underflow)
        return torch.logsumexp(torch.stack(log_probs), 0) - math.log(samples)

    def _update_posterior_metrics(self, metrics, x: torch.Tensor, y: torch.Tensor) -> None:
        log_mean = self._posterior_log_predictive(x)
        if log_mean is None:
            return
        probs = log_mean.exp()
        metrics["pp_acc"].update(probs, y)
        metrics["pp_ece"].update(probs, y)
        metrics["pp_nll"].update(-log_mean.gather(1, y[:, None]).squeeze(1))

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Columns of ``aipflow predict``'s file: ``index`` and ``label`` (when the batch has them; -1 for none),
        ``predicted`` and the class probabilities ``prob``; with a Bayesian optimizer and ``posterior_samples``,
        also the posterior predictive ``pp_predicted``, ``pp_prob`` and its entropy ``pp_entropy`` (nats)."""
        if isinstance(batch, dict):
            x = batch["x"]
        elif isinstance(batch, (list, tuple)):
            x = batch[0]
        else:
            x = batch
        probs = self(x).float().softmax(1)
        out: dict[str, torch.Tensor] = {}
        if isinstance(batch, dict) and "index" in batch:
            out["index"] = batch["index"]
        if isinstance(batch, dict) and "y" in batch:
            out["label"] = batch["y"]
        out["predicted"] = probs.argmax(1)
        out["prob"] = probs
        log_mean = self._posterior_log_predictive(x) if self.hparams.posterior_samples else None
        if log_mean is not None:
            pp = log_mean.exp()
            out["pp_predicted"] = pp.argmax(1)
            out["pp_prob"] = pp
            out["pp_entropy"] = -(pp * log_mean).sum(1)
        return out

    def on_predict_epoch_start(self) -> None:
        self._posterior_generator = None

    def on_test_epoch_end(self) -> None:
        if not self._test_probs:
            return
        # every rank takes part in the collectives (log_dir is a broadcast; each rank holds its shard), rank 0 plots
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        probs, labels = torch.cat(self._test_probs), torch.cat(self._test_labels)
        if self.trainer.world_size > 1:  # the distributed sampler gives every rank the same number of rows
            probs = self.all_gather(probs.to(self.device)).reshape(-1, probs.shape[1]).cpu()
            labels = self.all_gather(labels.to(self.device)).reshape(-1).cpu()
        if not self.trainer.is_global_zero:
            self._test_probs.clear()
            self._test_labels.clear()
            return
        self.reliability_diagram_path = plot_reliability_diagram(
            probs,
            labels,
            folder / "reliability_test.png",
            self.hparams.ece_bins,
            title=f"{self.run_label or os.path.basename(str(folder))}, test split",
            probabilities=self.probabilities_description,
        )
        self._test_probs.clear()
        self._test_labels.clear()
