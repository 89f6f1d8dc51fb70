"""What every data module with its own held-out splits needs: seeded stratified train / validation / test indices,
features standardised with the training split's statistics only, and a training order that a resumed run repeats."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler", "feature_scale", "stratified_split", "training_epoch"]


def stratified_split(
    strata: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test row indices, each with the class (``strata``) proportions of the whole, the
    same for the same seed: the test split first, then validation from the rest."""
    from sklearn.model_selection import train_test_split

    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"data.{name} must lie in (0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction + test_fraction}")
    strata = np.asarray(strata)
    rows = np.arange(len(strata))
    rest, test = train_test_split(rows, test_size=test_fraction, stratify=strata, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=strata[rest], random_state=seed
    )
    return train, val, test


def feature_scale(x: np.ndarray, train_rows: np.ndarray, floor: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, std + floor)`` over the training rows only, to standardise every split as
    ``(x - mean) / scale`` (nothing leaks from validation or test, and new data is scaled the same way). The floor
    keeps nearly constant features (digits' border pixels) from being blown up."""
    return x[train_rows].mean(0, keepdims=True), x[train_rows].std(0, keepdims=True) + floor


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch from ``seed + epoch`` (Lightning calls ``set_epoch``), so the order of any
    epoch does not depend on what ran before it: a run resumed from a checkpoint sees the same batches. Under DDP
    Lightning swaps it for its distributed sampler, which shuffles the same way.

    Create it with ``epoch=training_epoch(datamodule)``: Lightning starts the first epoch's loader before it calls
    ``set_epoch``, and a loader with workers draws its first indices at once, so a resumed run would otherwise
    replay epoch 0's order in the epoch it resumes."""

    def __init__(self, size: int, seed: int = 0, epoch: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def training_epoch(datamodule) -> int:
    """The epoch a data module's training loader is made for: the attached trainer's (restored from a checkpoint
    before the loader is requested), else 0."""
    trainer = getattr(datamodule, "trainer", None)
    return int(trainer.current_epoch) if trainer is not None else 0
