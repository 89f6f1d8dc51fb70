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

from collections.abc import Iterable

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from aipflow.data import RowDataset, check_finite_features, feature_scale, stratified_split
from aipflow.data import open_dataset as core_open_dataset

SETTINGS = ("two_sample", "one_sample")


def open_dataset(dataset: str):
    """The ``train`` split (or the first) of a Hugging Face source, opened by the core's loader
    (:func:`aipflow.data.open_dataset`: a saved folder, a data file, an image folder or a hub name)."""
    splits = core_open_dataset(dataset)
    return splits["train"] if "train" in splits else next(iter(splits.values()))


def dataset_column(data, column: str, field: str, dataset: str):
    if column not in data.column_names:
        raise ValueError(f"data.{field}={column!r} is not a column of {dataset!r} (columns: {data.column_names})")
    return data[column]


def load_labelled(
    dataset: str = "digits", feature_column: str | None = None, label_column: str = "label"
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, d)`` float32 and integer class labels ``(N,)``.

    ``dataset``: ``"digits"`` (scikit-learn's 8x8 digits, pixels / 16, installed offline) or a Hugging Face
    ``datasets`` dataset (:func:`open_dataset`). Features are ``feature_column`` (a list / array per row) or, when
    it is ``None``, every numeric column but the label."""
    if dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images.reshape(-1, 64) / 16.0).astype(np.float32), digits.target.astype(np.int64)
    data = open_dataset(dataset)
    y = np.asarray(dataset_column(data, label_column, "label_column", dataset))
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"data.label_column={label_column!r} must hold integer class ids, got dtype {y.dtype}")
    if feature_column is not None:
        dataset_column(data, feature_column, "feature_column", dataset)
        x = np.asarray(data.with_format("numpy")[feature_column], dtype=np.float32).reshape(len(y), -1)
    else:
        numeric = [
            c for c in data.column_names if c != label_column and data.features[c].dtype.startswith(("int", "float"))
        ]
        if not numeric:
            raise ValueError(f"{dataset!r} has no numeric feature columns; name one with data.feature_column")
        x = np.stack([np.asarray(data[c], dtype=np.float32) for c in numeric], axis=1)
    check_finite_features(x, repr(dataset), columns=[feature_column] if feature_column else numeric)
    return x, y.astype(np.int64)


def labelled_splits(
    stratify_by,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    dataset: str = "digits",
    feature_column: str | None = None,
    label_column: str = "label",
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A labelled dataset (:func:`load_labelled`): features standardised with the training split's statistics,
    the class labels, and seeded train / validation / test indices stratified by ``stratify_by(labels)``."""
    x, labels = load_labelled(dataset, feature_column, label_column)
    train_idx, val_idx, test_idx = stratified_split(stratify_by(labels), val_fraction, test_fraction, split_seed)
    mean, scale = feature_scale(x, train_idx)
    x = (x - mean) / scale
    return x, labels, (train_idx, val_idx, test_idx)


class IndexedTensorDataset(RowDataset):
    """The core's row dataset over named tensors (``fields``, given in that order): rows as dicts with each row's
    ``index`` (per-sample state such as PRODEN's weights needs it)."""

    fields: tuple[str, ...] = ()

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(dict(zip(self.fields, tensors, strict=True)))


class PUDataset(IndexedTensorDataset):
    fields = ("x", "s", "y")


class StratifiedBatchSampler(BatchSampler):
    """Batches holding every group (e.g. labelled / unlabelled) in its overall proportion, at least one row of
    each, a new seeded order each epoch (``set_epoch``), over the rows that ``sampler`` yields.

    It follows ``BatchSampler``'s API, so under DDP Lightning replaces ``sampler`` with its distributed sampler:
    each rank then stratifies its own shard. The number of batches depends only on the shard's size and the
    global group sizes, so every rank runs the same number of steps."""

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        groups: torch.Tensor,
        seed: int = 0,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        if drop_last:  # BatchSampler's argument, kept for its API: the stratified split leaves no rows over
            raise ValueError("StratifiedBatchSampler spreads every row over its batches: drop_last must be False")
        self.groups, self.seed, self.epoch = torch.as_tensor(groups), seed, 0
        self.group_values = torch.unique(self.groups)
        self.smallest = min(int((self.groups == g).sum()) for g in self.group_values)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):  # a distributed sampler reshuffles its shard too
            self.sampler.set_epoch(epoch)

    def _num_batches(self, rows: int) -> int:
        return max(1, min(rows // self.batch_size, self.smallest * rows // len(self.groups)))

    def __iter__(self):
        rows = torch.as_tensor(list(self.sampler), dtype=torch.long)
        batches = self._num_batches(len(rows))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        chunks = []
        for value in self.group_values:
            members = rows[self.groups[rows] == value]
            chunks.append(np.array_split(members[torch.randperm(len(members), generator=g)].numpy(), batches))
        for parts in zip(*chunks, strict=True):
            yield [int(i) for part in parts for i in part]

    def __len__(self) -> int:
        return self._num_batches(len(self.sampler))


def stratified_loader(dataset: Dataset, groups: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    """Training batches of ``dataset`` stratified by ``groups`` (:class:`StratifiedBatchSampler`)."""
    sampler = StratifiedBatchSampler(SequentialSampler(dataset), batch_size, groups=groups, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler)


class WeakLabelDataModule(L.LightningDataModule):
    """What the weak-label data modules share: the labelled source (``dataset``, ``feature_column``,
    ``label_column``) and its seeded, stratified splits; the training-set size; whole-split validation batches
    (the weak risks need every weak group in one batch) and test loaders."""

    positive_classes: list[int]

    def splits(self, stratify_by) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        hp = self.hparams
        return labelled_splits(
            stratify_by,
            hp.val_fraction,
            hp.test_fraction,
            hp.split_seed,
            hp.dataset,
            hp.feature_column,
            hp.label_column,
        )

    def binary_splits(self) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Features, labels +1 (``positive_classes``) / -1, and the split indices (stratified by that label)."""

        def binary(labels: np.ndarray) -> np.ndarray:
            return np.where(np.isin(labels, self.positive_classes), 1, -1)

        x, labels, indices = self.splits(binary)
        return x, binary(labels), indices

    @property
    def train_size(self) -> int:
        self.setup()
        return len(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=len(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=512)

    def predict_dataloader(self) -> DataLoader:
        """``aipflow predict`` predicts the test split (its rows' ``index`` and true labels go into the file)."""
        self.setup()
        return self.test_dataloader()


class PUDigitsDataModule(WeakLabelDataModule):
    """Digits as a PU task: positives are ``positive_classes`` (even digits by default), ``n_labeled`` of them
    labelled (the nnPU paper's MNIST protocol, scaled to digits). Any labelled ``dataset`` works the same way
    (a Hugging Face dataset folder, data file or hub name: see :func:`load_labelled`)."""

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
        dataset: str = "digits",
        feature_column: str | None = None,
        label_column: str = "label",
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
        x, y, (train_idx, val_idx, test_idx) = self.binary_splits()
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

    def train_dataloader(self) -> DataLoader:
        return stratified_loader(self.train_set, self.train_set.s, self.hparams.batch_size, self.hparams.label_seed)
