"""Learning to reweight noisy training examples with a small trusted (clean) set, as a bilevel problem: the
weights are chosen so that one training step on the weighted loss lowers the loss on the clean set.

- **L2RW** (Ren, Zeng, Yang & Urtasun, "Learning to Reweight Examples for Robust Deep Learning", ICML 2018,
  Algorithm 1): per batch, a virtual step ``w'(eps) = w - alpha grad_w sum_i eps_i l_i(w)`` at ``eps = 0``; the
  weights are ``max(-dL_clean(w'(eps))/d eps_i, 0)``, normalised to sum 1 (all zero when every derivative is
  non-negative: the batch then does not train).
- **Meta-Weight-Net** (Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping for Sample Weighting", NeurIPS
  2019, Algorithm 1): the weight of an example is ``V(l_i; theta)``, an MLP 1-100-1 with a sigmoid output; per batch
  a virtual step ``w'(theta) = w - alpha grad_w (1/n) sum_i V(l_i; theta) l_i(w)``, one step of the meta-net's own
  optimizer on ``L_clean(w'(theta))`` (Adam, lr 1e-3, weight decay 1e-4 as their code), then the batch trains on
  ``V(l_i; theta_new)`` normalised to sum 1 over the batch (their code's normalisation).

``ReweightingTask`` is a :class:`aipflow.tasks.ClassificationTask` whose training loss is the weighted sum of the
configured loss per row (any core loss with a ``reduction``: CE, GCE, NCE+RCE, ...), trained by any core
optimizer: the weights are computed once per batch, before the optimizer's passes, so SAM / bSAM / IVON's extra
passes use the same weights. The virtual step runs on copies of the weights through ``torch.func.functional_call``
(batch-norm statistics unchanged); its step size ``virtual_lr`` is the optimizer's learning rate unless given.

The clean set is ``meta_size`` rows of the data module's validation split (whose labels must be trusted; the
digits module's are clean), drawn once with ``meta_seed``, served in batches of ``meta_batch_size`` in a seeded
cycle. Validation and model selection then see those rows too: the benchmark tests the final weights on the test
split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from aipflow.losses import upcast
from aipflow.tasks import ClassificationTask
from aipflow_bilevel._functional import RowCycle, forward_at, inputs_and_labels

__all__ = ["METHODS", "MetaWeightNet", "ReweightingTask", "l2rw_weights", "meta_weight_net_loss"]

METHODS = ("l2rw", "mwn")


class MetaWeightNet(nn.Module):
    """Shu et al.'s weighting function: loss -> weight in (0, 1), an MLP ``1 -> hidden -> 1`` with ReLU and a
    sigmoid output."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: Tensor) -> Tensor:
        return torch.sigmoid(self.net(losses.reshape(-1, 1))).reshape(-1)


def _virtual_parameters(
    network: nn.Module, per_row_loss, x: Tensor, y: Tensor, row_weights: Tensor, alpha: float
) -> dict[str, Tensor]:
    """``w - alpha grad_w sum_i r_i l_i(w)`` for the trainable weights (a graph back to ``row_weights``)."""
    names = [n for n, p in network.named_parameters() if p.requires_grad]
    params = {n: p for n, p in network.named_parameters() if p.requires_grad}
    logits = forward_at(network, params, x)
    weighted = (row_weights * per_row_loss(logits, y)).sum()
    grads = torch.autograd.grad(weighted, [params[n] for n in names], create_graph=True, allow_unused=True)
    return {n: params[n] if g is None else params[n] - alpha * g for n, g in zip(names, grads, strict=True)}


def _clean_loss(network: nn.Module, weights: dict[str, Tensor], batch: Any) -> Tensor:
    x, y = inputs_and_labels(batch)
    logits = forward_at(network, weights, x)
    return nn.functional.cross_entropy(upcast(logits), y)


def l2rw_weights(network: nn.Module, per_row_loss, batch: Any, clean_batch: Any, alpha: float) -> Tensor:
    """Ren et al.'s example weights for ``batch`` (sum 1, or all zero), from one virtual step of size ``alpha``
    and the cross-entropy on ``clean_batch``."""
    x, y = inputs_and_labels(batch)
    dtype = next(network.parameters()).dtype
    eps = torch.zeros(len(y), device=y.device, dtype=dtype if dtype.is_floating_point else None, requires_grad=True)
    with torch.enable_grad():
        virtual = _virtual_parameters(network, per_row_loss, x, y, eps, alpha)
        (grad,) = torch.autograd.grad(_clean_loss(network, virtual, clean_batch), [eps])
    weights = torch.clamp(-grad, min=0.0)
    total = weights.sum()
    return (weights / total if total > 0 else weights).detach()


def _row_losses(network: nn.Module, per_row_loss, x: Tensor, y: Tensor) -> Tensor:
    """Each row's loss at the current weights, without a graph and without touching batch-norm statistics."""
    with torch.no_grad():
        return per_row_loss(forward_at(network, {}, x), y)


def meta_weight_net_loss(
    network: nn.Module, weight_net: Callable[[Tensor], Tensor], per_row_loss, batch: Any, clean_batch: Any, alpha: float
) -> tuple[Tensor, Tensor]:
    """Shu et al.'s meta objective ``L_clean(w - alpha grad_w (1/n) sum_i V(l_i; theta) l_i(w))`` as a function
    of the weighting network's parameters ``theta`` (differentiable; ``weight_net`` a module or a functional call
    of one), and the rows' losses ``l_i``."""
    x, y = inputs_and_labels(batch)
    losses = _row_losses(network, per_row_loss, x, y)
    weights = weight_net(losses)
    virtual = _virtual_parameters(network, per_row_loss, x, y, weights / len(y), alpha)
    return _clean_loss(network, virtual, clean_batch), losses


class ReweightingTask(ClassificationTask):
    """A classification task that reweights its training rows by L2RW or Meta-Weight-Net (see the module).

    Args:
        model: the network.
        method: ``"l2rw"`` or ``"mwn"``.
        meta_size: rows of the validation split used as the clean set (100).
        meta_batch_size: clean rows per step (100; Ren et al. and Shu et al. use a clean batch per step).
        meta_seed: seed of the clean rows' choice and order.
        virtual_lr: the virtual step's size (null: the optimizer's first group's learning rate at that step).
        meta_lr / meta_weight_decay / meta_hidden: Meta-Weight-Net's optimizer (Adam) and width (1e-3, 1e-4, 100).
        **kwargs: the rest of :class:`aipflow.tasks.ClassificationTask`'s options.
    """

    accepts_sample_weights = False  # the meta step learns each row's weight

    def __init__(
        self,
        model: nn.Module,
        method: str = "l2rw",
        meta_size: int = 100,
        meta_batch_size: int = 100,
        meta_seed: int = 0,
        virtual_lr: float | None = None,
        meta_lr: float = 1e-3,
        meta_weight_decay: float = 1e-4,
        meta_hidden: int = 100,
        **kwargs,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"model.method must be one of {METHODS}, got {method!r}")
        for name, value in (("meta_size", meta_size), ("meta_batch_size", meta_batch_size)):
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value}")
        if virtual_lr is not None and not virtual_lr > 0:
            raise ValueError(f"model.virtual_lr must be > 0, got {virtual_lr}")
        super().__init__(model, **kwargs)
        # its parameters take no gradient from the training loss (and data-parallel wrappers leave them alone):
        # the meta-step differentiates a functional copy and hands the gradient to its own optimizer
        self.weight_net = MetaWeightNet(meta_hidden).requires_grad_(False) if method == "mwn" else None
        self._meta_optimizer: torch.optim.Optimizer | None = None
        self._meta_rows: Tensor | None = None
        self._clean_rows: RowCycle | None = None
        self._row_weights: Tensor | None = None

    # ---------------------------------------------------------------------------------------- what trains
    def _per_row(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.per_example_loss(logits, y, field="model.loss")

    # ---------------------------------------------------------------------------------------- the clean set
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self._meta_rows is None:
            dm = self.trainer.datamodule
            dm.setup("validate")
            dataset = dm.val_dataloader().dataset
            if len(dataset) < self.hparams.meta_size:
                raise ValueError(
                    f"model.meta_size is {self.hparams.meta_size} but the validation split has {len(dataset)} rows"
                )
            chooser = torch.Generator().manual_seed(self.hparams.meta_seed)
            self._meta_rows = torch.randperm(len(dataset), generator=chooser)[: self.hparams.meta_size]
            self._clean_rows = RowCycle(dataset, self._meta_rows, self.hparams.meta_batch_size, self.hparams.meta_seed)
        if self.weight_net is not None and self._meta_optimizer is None:
            self.setup_meta_optimizer()

    def setup_meta_optimizer(self) -> None:
        """Meta-Weight-Net's own optimizer (Adam, ``meta_lr``, ``meta_weight_decay``)."""
        self._meta_optimizer = torch.optim.Adam(
            self.weight_net.parameters(), lr=self.hparams.meta_lr, weight_decay=self.hparams.meta_weight_decay
        )

    def _clean_batch(self) -> Any:
        return self.transfer_batch_to_device(self._clean_rows.next_batch(), self.device, 0)

    def _virtual_lr(self) -> float:
        if self.hparams.virtual_lr is not None:
            return float(self.hparams.virtual_lr)
        return float(self.trainer.optimizers[0].param_groups[0]["lr"])

    # ---------------------------------------------------------------------------------------- the weights
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        clean = self._clean_batch()
        alpha = self._virtual_lr()
        network = self.model
        if self.weight_net is None:
            self._row_weights = l2rw_weights(network, self._per_row, batch, clean, alpha)
            return
        theta = {n: p.detach().requires_grad_(True) for n, p in self.weight_net.named_parameters()}

        def weighting(losses: Tensor) -> Tensor:
            return functional_call(self.weight_net, theta, (losses,))

        with torch.enable_grad():
            meta_loss, losses = meta_weight_net_loss(network, weighting, self._per_row, batch, clean, alpha)
            meta_grads = torch.autograd.grad(meta_loss, list(theta.values()))
        for p, g in zip(self.weight_net.parameters(), meta_grads, strict=True):
            p.grad = g
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for p in self.weight_net.parameters():  # one meta-net on every rank
                torch.distributed.all_reduce(p.grad)
                p.grad /= torch.distributed.get_world_size()
        self._meta_optimizer.step()
        self.log("train/meta_loss", meta_loss.detach(), on_step=True, on_epoch=True)
        with torch.no_grad():
            weights = self.weight_net(losses)
        total = weights.sum()
        self._row_weights = (weights / total if total > 0 else weights).detach()

    def training_loss(self, logits: Tensor, y: Tensor, batch) -> Tensor:
        """``sum_i r_i l_i`` with this batch's weights ``r`` (sum 1). A pass on a slice of the batch (bSAM's
        sub-batches) has no weights of its own and is refused with one line."""
        weights = self._row_weights
        per_row = self._per_row(logits, y)
        if weights is None or len(weights) != len(per_row):
            raise ValueError(
                f"ReweightingTask: {len(per_row)} rows but {0 if weights is None else len(weights)} weights; "
                "optimizers that split the batch (bSAM's num_subbatches > 1) are not supported here"
            )
        self.log("train/weight_zero_share", (weights == 0).float().mean(), on_step=False, on_epoch=True)
        return (weights.to(per_row.dtype) * per_row).sum()

    # ---------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["aipflow_reweighting"] = {
            "clean_rows": self._clean_rows.state_dict() if self._clean_rows is not None else None,
            "meta_optimizer": self._meta_optimizer.state_dict() if self._meta_optimizer is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("aipflow_reweighting")
        if state is None:
            return
        if state["clean_rows"] is not None and self._clean_rows is not None:
            self._clean_rows.load_state_dict(state["clean_rows"])
            self._meta_rows = self._clean_rows.rows
        if state["meta_optimizer"] is not None:
            if self._meta_optimizer is None:
                self.setup_meta_optimizer()
            self._meta_optimizer.load_state_dict(state["meta_optimizer"])
