"""scikit-learn's digits (1,797 real 8x8 handwritten digits, installed with scikit-learn: no download)."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from aipflow.data.curation import Curation
from aipflow.data.noise import LEGACY_NOISE_OPTIONS, NO_LABEL_NOISE, LabelNoise, NoisyLabels
from aipflow.data.rows import IndexedDataset
from aipflow.data.splits import EpochShuffleSampler, feature_scale, stratified_split, training_epoch


class DigitsDataModule(L.LightningDataModule):
    """Digits with a fixed, seeded, stratified train/val/test split, per-pixel standardisation from the training
    split, and optional label noise on the training split only (val/test keep clean labels).

    Args:
        batch_size: training batch size (evaluation uses 4x).
        val_fraction / test_fraction: fractions of the 1,797 images held out.
        split_seed: seed of the split (fixed across runs so results compare).
        label_noise: noise on the training labels (:class:`~aipflow.data.noise.LabelNoise`: kind, rate,
            convention, seed, class_map; none by default; ``classmap`` noise uses the digits map 2->7, 3->8, 5<->6,
            7->1 when its ``class_map`` is omitted).
        flatten: give ``(64,)`` vectors instead of ``(1, 8, 8)`` images.
        shuffle_seed: seed of the per-epoch training order (``seed + epoch``; resumable).
        predict_file: what ``aipflow predict`` predicts: the test split when omitted, else a ``.csv`` (64 numeric
            columns, a header row allowed) or ``.npy`` file (``(N, 64)`` or ``(N, 8, 8)``) of raw digit images on
            scikit-learn's 0-16 scale, scaled exactly as the training data.
        exclude_rows / relabel: training rows left out / relabelled by row id (``train_row_ids``: the rows of
            scikit-learn's digits), as a list / mapping or the path of the ``label_issues.csv`` that
            ``aipflow find-issues`` wrote (its flagged rows; relabelled to the suggested label).
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        label_noise: LabelNoise = NO_LABEL_NOISE,
        flatten: bool = False,
        shuffle_seed: int = 0,
        num_workers: int = 0,
        predict_file: str | None = None,
        exclude_rows: list[int] | str | None = None,
        relabel: dict[int, int] | str | None = None,
        **legacy_noise_options: Any,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < frac < 1.0:
                raise ValueError(f"data.{name} must lie in (0, 1), got {frac}")
        if val_fraction + test_fraction >= 0.9:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must be < 0.9, got {val_fraction + test_fraction}"
            )
        self.label_noise = LabelNoise.of(label_noise, legacy_noise_options, type(self).__name__)
        self.save_hyperparameters(ignore=["label_noise", *LEGACY_NOISE_OPTIONS])
        self.hparams["label_noise"] = self.label_noise.as_dict()  # plain types: checkpoints load weights-only
        self.noise_report: NoisyLabels | None = None
        self.curation = Curation.of(exclude_rows, relabel)
        self.train_row_ids: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        from sklearn.datasets import load_digits

        hp = self.hparams
        digits = load_digits()
        x = digits.images.astype(np.float32) / 16.0
        y = digits.target.astype(np.int64)
        train_idx, val_idx, test_idx = stratified_split(y, hp.val_fraction, hp.test_fraction, hp.split_seed)
        mean, std = self._scale = feature_scale(x, train_idx)  # std + 0.1: border pixels are nearly constant
        x = (x - mean) / std
        x = torch.from_numpy(x).reshape(-1, 64) if hp.flatten else torch.from_numpy(x).unsqueeze(1)
        y = torch.from_numpy(y)

        self.noise_report = self.label_noise.apply(y[train_idx], self.num_classes, features=x[train_idx])
        if self.label_noise.active:
            rank_zero_info(f"[digits] training labels: {self.noise_report.summary()}")
        self.train_set = IndexedDataset(x[train_idx], self.noise_report.noisy, self.noise_report.clean)
        self.train_row_ids = np.asarray(train_idx)
        self.curate(self.curation)
        self.val_set = IndexedDataset(x[val_idx], y[val_idx])
        self.test_set = IndexedDataset(x[test_idx], y[test_idx])

    def curate(self, curation: Curation) -> None:
        """Leave out or relabel training rows by their ids (``train_row_ids``: rows of scikit-learn's digits)."""
        if curation.active:
            self.train_set, self.train_row_ids = curation.apply(self.train_set, self.train_row_ids, None, 10)
            rank_zero_info(f"[digits] {curation.describe()}")

    @property
    def train_size(self) -> int:
        self.setup()
        return len(self.train_set)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        # keyword arguments only: Lightning re-creates loaders (predict, DDP) from their keyword arguments
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(len(self.train_set), self.hparams.shuffle_seed, training_epoch(self))
        return self._loader(self.train_set, self.hparams.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 4 * self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, 4 * self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The test split (with its labels), or ``predict_file``'s rows."""
        self.setup()
        if self.hparams.predict_file is None:
            return self.test_dataloader()
        return self._loader(self._read_predict_file(self.hparams.predict_file), 4 * self.hparams.batch_size)

    def _read_predict_file(self, path: str) -> Dataset:
        from pathlib import Path

        from aipflow.data.checks import check_finite_features

        file = Path(path)
        if not file.is_file():
            raise ValueError(f"data.predict_file: {path!r}: no such file")
        if file.suffix == ".npy":
            raw = np.load(file, allow_pickle=False)
        elif file.suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(file, header=None)
            if not np.issubdtype(frame.iloc[0].to_numpy().dtype, np.number):  # a header row
                frame = pd.read_csv(file)
            raw = frame.select_dtypes("number").to_numpy()
        else:
            raise ValueError(f"data.predict_file: {path!r} must be a .csv or .npy file")
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim < 2 or raw[0].size != 64:
            raise ValueError(
                f"data.predict_file: {path!r} holds rows of {raw[0].size if raw.ndim else 0} values; digits need 64 "
                "(8x8 pixels on the 0-16 scale)"
            )
        check_finite_features(raw, f"predict_file {path!r}")
        mean, std = self._scale
        x = (raw.reshape(-1, 8, 8) / 16.0 - mean) / std
        x = torch.from_numpy(x.astype(np.float32))
        x = x.reshape(-1, 64) if self.hparams.flatten else x.unsqueeze(1)
        return IndexedDataset(x, torch.full((len(x),), -1, dtype=torch.long))
