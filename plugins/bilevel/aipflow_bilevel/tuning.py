"""Hyper-parameters tuned during fit by hypergradient descent on a validation loss (Lorraine, Vicol & Duvenaud,
AISTATS 2020, Algorithm 1: alternate ``hyper_every`` optimizer steps on the training loss with one step on the
hyper-parameters along the implicit hypergradient of the validation loss).

``HypergradientTask`` is a :class:`aipflow.tasks.ClassificationTask` whose training loss carries continuous
hyper-parameters as tensors:

- ``weight_decay``: an L2 penalty ``sum_g exp(log_lambda_g) / 2 ||w_g||^2`` with one ``lambda_g`` per top-level
  module of the network that has parameters (per layer for ``nn.Sequential``); the optimizer's own weight decay
  should then be 0;
- ``label_smoothing``: the core's label-smoothed cross-entropy (``(1 - eps) CE + eps`` times the mean negative
  log-probability over classes) with ``eps = sigmoid(s)``, replacing the configured loss;
- ``input_noise``: the magnitude of a data augmentation, Gaussian noise added to the training inputs,
  ``x + sigma z`` with ``sigma = exp(log_sigma)`` (reparameterised, so the training loss is differentiable in it;
  ``z`` from the task's own seeded generator, kept in checkpoints).

Every ``hyper_every`` steps the hypergradient of the cross-entropy on one validation batch (a seeded cycle over the
validation split) is taken at the current weights on the current training batch, by ``method``: ``neumann`` /
``cg`` (implicit, ``iterations`` terms, ``neumann_alpha``), or ``unrolled`` (``iterations`` steps of SGD of size
``neumann_alpha`` differentiated through), and Adam (``hyper_lr``) moves the hyper-parameters. They are logged
(``hyper/...``) and kept in checkpoints with the Adam state and the validation cycle, so a resumed run is the
uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from aipflow.losses import label_smoothing_loss, upcast
from aipflow.tasks import ClassificationTask
from aipflow_bilevel._functional import RowCycle, forward_at, inputs_and_labels
from aipflow_bilevel.hypergradient import implicit_hypergradient, unrolled_hypergradient

__all__ = ["HYPERPARAMETERS", "TUNING_METHODS", "HypergradientTask"]

HYPERPARAMETERS = ("weight_decay", "label_smoothing", "input_noise")
TUNING_METHODS = ("neumann", "cg", "unrolled")


class HypergradientTask(ClassificationTask):
    """A classification task that tunes ``tune`` (``weight_decay``, ``label_smoothing``) by hypergradients.

    Args:
        model: the network.
        tune: which hyper-parameters (see the module).
        weight_decay: the initial L2 strength (each group's), > 0.
        label_smoothing: the initial smoothing, in (0, 1).
        input_noise: the initial std of the input-noise augmentation, > 0 (in the inputs' units).
        method: ``neumann``, ``cg`` or ``unrolled``.
        iterations: Neumann terms / CG steps / unrolled steps (20).
        neumann_alpha: the Neumann series' (and unrolled SGD's) step, below 2 / lambda_max(H) (0.01).
        hyper_lr: Adam's rate on ``log lambda`` and ``logit eps`` (0.01).
        hyper_every: optimizer steps between hyper-steps (10).
        hyper_seed: seed of the validation batches' order.
        **kwargs: the rest of :class:`aipflow.tasks.ClassificationTask`'s options.
    """

    def __init__(
        self,
        model: nn.Module,
        tune: list[str] | None = None,
        weight_decay: float = 1e-3,
        label_smoothing: float = 0.1,
        input_noise: float = 0.1,
        method: str = "neumann",
        iterations: int = 20,
        neumann_alpha: float = 0.01,
        hyper_lr: float = 0.01,
        hyper_every: int = 10,
        hyper_seed: int = 0,
        **kwargs,
    ) -> None:
        tune = list(tune if tune is not None else ["weight_decay"])
        unknown = [t for t in tune if t not in HYPERPARAMETERS]
        if unknown or not tune:
            raise ValueError(f"model.tune must list some of {HYPERPARAMETERS}, got {tune}")
        if method not in TUNING_METHODS:
            raise ValueError(f"model.method must be one of {TUNING_METHODS}, got {method!r}")
        if not weight_decay > 0:
            raise ValueError(f"model.weight_decay must be > 0 (it is tuned in log space), got {weight_decay}")
        if not input_noise > 0:
            raise ValueError(f"model.input_noise must be > 0 (it is tuned in log space), got {input_noise}")
        if not 0.0 < label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing must lie in (0, 1), got {label_smoothing}")
        for name, value in (("iterations", iterations), ("hyper_every", hyper_every)):
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value}")
        super().__init__(model, **kwargs)
        self.groups = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
        if "weight_decay" in tune and not self.groups:
            raise ValueError("model.tune: weight_decay needs a network with child modules holding parameters")
        # plain tensors (not nn.Parameters): the network's optimizer must not see them; saved as buffers
        self.register_buffer("log_weight_decay", torch.full((max(len(self.groups), 1),), math.log(weight_decay)))
        self.register_buffer("smoothing_logit", torch.tensor(math.log(label_smoothing / (1 - label_smoothing))))
        self.register_buffer("log_input_noise", torch.tensor(math.log(input_noise)))
        self._augment_generator = torch.Generator().manual_seed(hyper_seed + 1)
        self._hyper_optimizer: torch.optim.Optimizer | None = None
        self._val_rows: RowCycle | None = None

    # ---------------------------------------------------------------------------------------- the losses
    def hyperparameters_tuned(self) -> list[Tensor]:
        out = []
        if "weight_decay" in self.hparams.tune:
            out.append(self.log_weight_decay)
        if "label_smoothing" in self.hparams.tune:
            out.append(self.smoothing_logit)
        if "input_noise" in self.hparams.tune:
            out.append(self.log_input_noise)
        return out

    def _noise_like(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self._augment_generator, dtype=torch.float32).to(x)

    def _augmented(self, x: Tensor, noise: Tensor) -> Tensor:
        if "input_noise" not in self.hparams.tune:
            return x
        return x + torch.exp(self.log_input_noise).to(x.dtype) * noise

    def training_step(self, batch, batch_idx: int) -> Tensor:
        """The parent's step on augmented inputs when ``input_noise`` is tuned."""
        if "input_noise" in self.hparams.tune:
            x, _ = inputs_and_labels(batch)
            noisy = self._augmented(x, self._noise_like(x))
            batch = {**batch, "x": noisy} if isinstance(batch, dict) else (noisy, *batch[1:])
        return super().training_step(batch, batch_idx)

    def _penalty(self, weights: dict[str, Tensor]) -> Tensor:
        if "weight_decay" not in self.hparams.tune:
            return torch.zeros((), device=self.device)
        total = torch.zeros((), device=self.device)
        for i, group in enumerate(self.groups):
            squares = sum((upcast(w) ** 2).sum() for name, w in weights.items() if name.split(".")[0] == group)
            total = total + 0.5 * torch.exp(self.log_weight_decay[i]) * squares
        return total

    def _data_loss(self, logits: Tensor, y: Tensor, batch: Any) -> Tensor:
        if "label_smoothing" in self.hparams.tune:
            # the core's label smoothing, differentiable in its (tensor) smoothing
            return label_smoothing_loss(logits, y, torch.sigmoid(self.smoothing_logit))
        return super().training_loss(logits, y, batch)

    def training_loss(self, logits: Tensor, y: Tensor, batch) -> Tensor:
        """The data term (smoothed cross-entropy when tuned, else the configured loss) plus the tuned L2 penalty."""
        weights = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        return self._data_loss(logits, y, batch) + self._penalty(weights)

    # ---------------------------------------------------------------------------------------- the hyper-step
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self._hyper_optimizer is None:
            self._make_hyper_optimizer()

    def _make_hyper_optimizer(self) -> None:
        for t in (self.log_weight_decay, self.smoothing_logit, self.log_input_noise):
            t.requires_grad_(False)
        self._hyper_optimizer = torch.optim.Adam(self.hyperparameters_tuned(), lr=self.hparams.hyper_lr)

    def _validation_rows(self) -> RowCycle:
        if self._val_rows is None:
            loader = self.trainer.datamodule.val_dataloader()
            rows = torch.arange(len(loader.dataset))
            self._val_rows = RowCycle(loader.dataset, rows, loader.batch_size or 64, self.hparams.hyper_seed)
        return self._val_rows

    def _validation_batch(self) -> Any:
        return self.transfer_batch_to_device(self._validation_rows().next_batch(), self.device, 0)

    def hypergradient(self, batch: Any, val_batch: Any) -> list[Tensor]:
        """The hypergradient of the validation cross-entropy for the current weights and training batch."""
        network = self.model
        names = [n for n, p in network.named_parameters() if p.requires_grad]
        params = [p for n, p in network.named_parameters() if p.requires_grad]
        x, y = inputs_and_labels(batch)
        xv, yv = inputs_and_labels(val_batch)
        hyper = [h.detach().requires_grad_(True) for h in self.hyperparameters_tuned()]
        originals = {
            "log_weight_decay": self.log_weight_decay,
            "smoothing_logit": self.smoothing_logit,
            "log_input_noise": self.log_input_noise,
        }
        noise = self._noise_like(x)  # one augmentation draw for every evaluation of the inner loss
        keys = [k for k, t in originals.items() if any(t is h for h in self.hyperparameters_tuned())]

        def with_hyper(values: list[Tensor]):
            for key, value in zip(keys, values, strict=True):
                setattr(self, key, value)

        def inner(weights: list[Tensor], values: list[Tensor]) -> Tensor:
            with_hyper(values)
            named = dict(zip(names, weights, strict=True))
            logits = forward_at(network, named, self._augmented(x, noise))
            return self._data_loss(logits, y, batch) + self._penalty(named)

        def outer(weights: list[Tensor], values: list[Tensor]) -> Tensor:
            named = dict(zip(names, weights, strict=True))
            logits = forward_at(network, named, xv)
            return nn.functional.cross_entropy(upcast(logits), yv)

        was_training = network.training
        try:
            if self.hparams.method == "unrolled":
                return unrolled_hypergradient(
                    inner, outer, params, hyper, self.hparams.iterations, self.hparams.neumann_alpha
                )
            return implicit_hypergradient(
                lambda: inner(params, hyper),
                lambda: outer(params, hyper),
                params,
                hyper,
                self.hparams.method,
                self.hparams.iterations,
                self.hparams.neumann_alpha,
            )
        finally:
            for key, value in originals.items():
                self._buffers[key] = value
            network.train(was_training)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (self.trainer.global_step % self.hparams.hyper_every) != 0:
            return
        grads = self.hypergradient(batch, self._validation_batch())
        for tensor, grad in zip(self.hyperparameters_tuned(), grads, strict=True):
            tensor.grad = grad.to(tensor.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in self.hyperparameters_tuned():  # the same hyper-parameters on every rank
                torch.distributed.all_reduce(tensor.grad)
                tensor.grad /= torch.distributed.get_world_size()
        self._hyper_optimizer.step()
        self._hyper_optimizer.zero_grad()
        if "weight_decay" in self.hparams.tune:
            for group, value in zip(self.groups, self.log_weight_decay.exp().tolist(), strict=True):
                self.log(f"hyper/weight_decay/{group}", value, on_step=True, on_epoch=False)
        if "label_smoothing" in self.hparams.tune:
            self.log("hyper/label_smoothing", torch.sigmoid(self.smoothing_logit), on_step=True, on_epoch=False)
        if "input_noise" in self.hparams.tune:
            self.log("hyper/input_noise", torch.exp(self.log_input_noise), on_step=True, on_epoch=False)

    # ---------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["aipflow_hypergradient"] = {
            "optimizer": self._hyper_optimizer.state_dict() if self._hyper_optimizer is not None else None,
            "augment_generator": self._augment_generator.get_state(),
            "val_rows": self._val_rows.state_dict() if self._val_rows is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("aipflow_hypergradient")
        if state is None:
            return
        self._augment_generator.set_state(state["augment_generator"])
        if state["val_rows"] is not None:  # the data module is set up when a fit restores its checkpoint
            self._validation_rows().load_state_dict(state["val_rows"])
        if state["optimizer"] is not None:
            self._pending_hyper_state = state["optimizer"]

    def on_fit_start(self) -> None:
        pending = getattr(self, "_pending_hyper_state", None)
        if pending is not None:  # the buffers were loaded after the optimizer was made: remake it on them
            self._make_hyper_optimizer()
            self._hyper_optimizer.load_state_dict(pending)
            self._pending_hyper_state = None
