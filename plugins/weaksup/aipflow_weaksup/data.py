"""Weak-label data modules. PU from any labelled data: a binary task (``positive_classes`` vs the rest), a few
labelled positives, the remaining training samples unlabelled.

Conventions (``setting``), both SCAR (the labelled positives are drawn at random from the positive samples):

- ``"two_sample"`` (case-control, du Plessis et al. 2015, Kiryo et al. 2017): the unlabelled set is every other
  training sample, so its class prior is ``pi = (n_pos - n_labeled) / (n - n_labeled)``;
- ``"one_sample"`` (censoring, Elkan & Noto 2008): one training set in which some positives carry a label; the
  unlabelled sample the risk sees is the *whole* set (labelled samples included, each also appearing once with
  ``s = 0``), a sample of the marginal, so its class prior is the training set's ``n_pos / n``.

The prior of the unlabelled sample is recorded as ``prior`` (the value the PU estimators need).
Validation keeps the same weak labelling (model selection from weak labels only) and the clean labels (reports).
Batches are dicts ``x, s (1 labelled, 0 unlabelled), y (+1 / -1, the truth), index``, and every training batch
holds labelled positives in their overall proportion (stratified), so that each batch can estimate each risk.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

SETTINGS = ("two_sample", "one_sample")


def digits_splits(
    stratify_by, val_fraction: float, test_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """scikit-learn's digits (8x8, 1,797 images): features standardised with the training split's statistics,
    the digit labels, and seeded train / validation / test indices stratified by ``stratify_by(digits)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.reshape(-1, 64) / 16.0).astype(np.float32)
    strata = stratify_by(digits.target)
    idx = np.arange(len(strata))
    rest, test_idx = train_test_split(idx, test_size=test_fraction, stratify=strata, random_state=split_seed)
    train_idx, val_idx = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=strata[rest], random_state=split_seed
    )
    x = (x - x[train_idx].mean(0)) / (x[train_idx].std(0) + 0.1)
    return x, digits.target.astype(np.int64), (train_idx, val_idx, test_idx)


class IndexedTensorDataset(Dataset):
    """Rows of named tensors (``fields``, given in that order) as dicts, with each row's ``index`` (per-sample
    state such as PRODEN's weights needs it)."""

    fields: tuple[str, ...] = ()

    def __init__(self, *tensors: torch.Tensor) -> None:
        for name, tensor in zip(self.fields, tensors, strict=True):
            setattr(self, name, tensor)

    def __len__(self) -> int:
        return getattr(self, self.fields[0]).shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = {name: getattr(self, name)[i] for name in self.fields}
        row["index"] = torch.tensor(i)
        return row


class PUDataset(IndexedTensorDataset):
    fields = ("x", "s", "y")


class StratifiedBatchSampler(Sampler[list[int]]):
    """Batches holding every group (e.g. labelled / unlabelled) in its overall proportion, at least one row of
    each, a new seeded order each epoch (``set_epoch``)."""

    def __init__(self, groups: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        self.members = [torch.nonzero(groups == g).squeeze(1) for g in torch.unique(groups)]
        smallest = min(len(m) for m in self.members)
        self.batches = max(1, min(len(groups) // batch_size, smallest))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        chunks = [
            np.array_split(members[torch.randperm(len(members), generator=g)].numpy(), self.batches)
            for members in self.members
        ]
        for parts in zip(*chunks, strict=True):
            yield [int(i) for part in parts for i in part]

    def __len__(self) -> int:
        return self.batches


class PUDigitsDataModule(L.LightningDataModule):
    """Digits as a PU task: positives are ``positive_classes`` (even digits by default), ``n_labeled`` of them
    labelled (the nnPU paper's MNIST protocol, scaled to digits)."""

    def __init__(
        self,
        positive_classes: list[int] | None = None,
        n_labeled: int = 100,
        setting: str = "two_sample",
        batch_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        label_seed: int = 0,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"data.setting must be one of {SETTINGS}, got {setting!r}")
        if n_labeled < 1:
            raise ValueError(f"data.n_labeled must be >= 1, got {n_labeled}")
        self.save_hyperparameters()
        self.positive_classes = [0, 2, 4, 6, 8] if positive_classes is None else list(positive_classes)
        self.prior: float | None = None

    def _weak_labels(self, y: np.ndarray, n_labeled: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        positives = np.flatnonzero(y == 1)
        if n_labeled >= len(positives):
            raise ValueError(
                f"data.n_labeled={n_labeled} leaves no unlabelled positives (the split has {len(positives)})"
            )
        s = np.zeros(len(y), dtype=np.int64)
        s[rng.choice(positives, n_labeled, replace=False)] = 1
        unlabeled = s == 0
        if unlabeled.sum() == 0:
            raise ValueError("the unlabelled set is empty")
        return s, float((y[unlabeled] == 1).mean())

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        hp = self.hparams

        def binary(digit: np.ndarray) -> np.ndarray:
            return np.where(np.isin(digit, self.positive_classes), 1, -1)

        x, digit, (train_idx, val_idx, test_idx) = digits_splits(
            binary, hp.val_fraction, hp.test_fraction, hp.split_seed
        )
        y = binary(digit)
        rng = np.random.default_rng(hp.label_seed)
        n_val = max(1, round(hp.n_labeled * len(val_idx) / len(train_idx)))
        s_train, self.prior = self._weak_labels(y[train_idx], hp.n_labeled, rng)
        s_val, self.val_prior = self._weak_labels(y[val_idx], n_val, rng)

        def make(ids, s):
            if hp.setting == "one_sample":  # the unlabelled sample is everything: labelled rows appear again, s = 0
                ids = np.concatenate([ids, ids[s == 1]])
                s = np.concatenate([s, np.zeros(int(s.sum()), dtype=s.dtype)])
            return PUDataset(torch.from_numpy(x[ids]), torch.from_numpy(s), torch.from_numpy(y[ids]))

        if hp.setting == "one_sample":
            self.prior = float((y[train_idx] == 1).mean())
            self.val_prior = float((y[val_idx] == 1).mean())
        self.train_set = make(train_idx, s_train)
        self.val_set = make(val_idx, s_val)
        self.test_set = make(test_idx, np.zeros(len(test_idx), dtype=np.int64))

    @property
    def train_size(self) -> int:
        self.setup()
        return len(self.train_set)

    def train_dataloader(self) -> DataLoader:
        sampler = StratifiedBatchSampler(self.train_set.s, self.hparams.batch_size, self.hparams.label_seed)
        return DataLoader(self.train_set, batch_sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=len(self.val_set))  # one batch: the weak risk needs both sets

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=512)
