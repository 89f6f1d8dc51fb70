"""How far a run fits its noisy labels: the training set's accuracy against the noisy and the clean labels."""

from __future__ import annotations

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

__all__ = ["LabelNoiseMonitor"]


class LabelNoiseMonitor(Callback):
    """Each epoch, the training set's accuracy against its noisy labels and against the clean ones.

    Memorisation shows as the noisy-label accuracy climbing towards 100 % while the clean-label accuracy falls.
    Logs ``train/fit_noisy_labels`` and ``train/fit_clean_labels`` (and ``test/acc_during_fit`` with
    ``track_test``, for best-epoch vs last-epoch studies); the numbers are also kept in ``history``. Needs a data
    module whose ``train_set`` yields dicts with ``y`` and ``clean_y`` (aipflow's do).
    """

    def __init__(self, every_n_epochs: int = 1, track_test: bool = False, batch_size: int = 512) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.track_test = track_test
        self.batch_size = batch_size
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def _accuracy(self, pl_module: L.LightningModule, loader: DataLoader) -> tuple[float, float]:
        noisy = clean = total = 0
        for batch in loader:
            x = move_data_to_device(batch["x"], pl_module.device)  # a tensor, or a dict of them (tokenised text)
            pred = pl_module(x).argmax(1).cpu()
            noisy += int((pred == batch["y"]).sum())
            clean += int((pred == batch["clean_y"]).sum())
            total += len(pred)
        return noisy / max(total, 1), clean / max(total, 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        train_set = getattr(dm, "train_set", None)
        if train_set is None:
            raise ValueError("LabelNoiseMonitor needs a data module with a train_set holding clean_y")
        was_training = pl_module.training
        pl_module.eval()
        loader = DataLoader(train_set, self.batch_size, collate_fn=getattr(dm, "collate", None))
        fit_noisy, fit_clean = self._accuracy(pl_module, loader)
        row = {"epoch": trainer.current_epoch, "fit_noisy_labels": fit_noisy, "fit_clean_labels": fit_clean}
        if self.track_test:
            row["test_acc"] = self._accuracy(pl_module, dm.test_dataloader())[1]
        pl_module.train(was_training)
        self.history.append(row)
        pl_module.log("train/fit_noisy_labels", fit_noisy)
        pl_module.log("train/fit_clean_labels", fit_clean)
        if self.track_test:
            pl_module.log("test/acc_during_fit", row["test_acc"])
