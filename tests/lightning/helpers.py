"""Small LightningModules and data for the integration tests."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def regression_data(n=64, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, 2, generator=g)
    y = x @ w + 0.1 * torch.randn(n, 2, generator=g)
    return x, y


class CountingModule(L.LightningModule):
    """A linear or BN model whose hooks count how often they fire."""

    def __init__(self, optimizer_factory, batch_norm=False, inject_inf_on_call=None, d=6):
        super().__init__()
        layers = [nn.Linear(d, 8)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(8))
        layers += [nn.Tanh(), nn.Linear(8, 2)]
        self.net = nn.Sequential(*layers)
        self.optimizer_factory = optimizer_factory
        self.counts = {"before_optimizer_step": 0, "clip": 0, "log": 0, "training_step": 0}
        self.inject_inf_on_call = inject_inf_on_call  # set of training_step call indices to poison

    def log(self, *args, **kwargs):
        self.counts["log"] += 1
        return super().log(*args, **kwargs)

    def training_step(self, batch, batch_idx):
        x, y = batch
        call = self.counts["training_step"]
        self.counts["training_step"] += 1
        loss = nn.functional.mse_loss(self.net(x), y)
        if self.inject_inf_on_call and call in self.inject_inf_on_call:
            loss = loss * float("inf")
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.counts["before_optimizer_step"] += 1

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.counts["clip"] += 1
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


def loader(x, y, batch_size):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer(callbacks=(), configure_integration=True, **kwargs):
    """The plugin kit's quiet CPU Trainer (:func:`aipflow.testing.quiet_trainer`) for one epoch on one device, not
    forced deterministic; without callbacks it configures SharpnessAwareTraining itself unless
    ``configure_integration=False`` (then only what the entry point adds to every Trainer)."""
    from aipflow.lightning import SharpnessAwareTraining
    from aipflow.testing import quiet_trainer

    cbs = list(callbacks) or ([SharpnessAwareTraining()] if configure_integration else [])
    return quiet_trainer(callbacks=cbs, **{"devices": 1, "max_epochs": 1, "deterministic": None, **kwargs})
