"""Classification on your own data: any Hugging Face source (:func:`aipflow.data.open_dataset`: a CSV / JSON /
parquet / arrow file, an image folder, a saved dataset, a hub name) with feature columns, an image column or a text
column, a clean label column, and label noise either generated (as for digits) or read from a noisy label column
(crowd labels, as in CIFAR-10N)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, default_collate

from aipflow.data.checks import check_finite_features
from aipflow.data.collate import Collator
from aipflow.data.curation import Curation
from aipflow.data.images import (
    LEGACY_IMAGE_OPTIONS,
    STATISTICS_SAMPLE,
    ImageInputs,
    ImageOptions,
    ImageSettings,
    decode_image,
    undecoded,
    unreadable_rows,
)
from aipflow.data.noise import (
    LEGACY_NOISE_OPTIONS,
    NO_LABEL_NOISE,
    LabelNoise,
    NoisyLabels,
    empirical_transition_matrix,
)
from aipflow.data.rows import RowDataset
from aipflow.data.sources import open_dataset
from aipflow.data.splits import EpochShuffleSampler, feature_scale, stratified_split, training_epoch

__all__ = ["HFDataModule"]

_VALIDATION_NAMES = ("validation", "valid", "val", "dev")


class _FeatureInputs:
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __call__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i]}


class _TextInputs:
    """The text of row ``i``, untouched: tokenising is the model's business (the fine-tuning plugin's collate)."""

    def __init__(self, table, column: str) -> None:
        self.table, self.column = table.select_columns([column]), column

    def __call__(self, i: int) -> dict[str, str]:
        return {"text": self.table[i][self.column]}


class HFDataModule(L.LightningDataModule):
    """Classification over any Hugging Face source: feature columns (tabular), an image column, or a text column.

    Splits: the source's own ``train`` / ``validation`` / ``test`` when present; a missing validation (or test)
    split is carved from ``train``, seeded and stratified, with the fractions given; the result is recorded in
    ``split_report``.

    Inputs, one kind per data module:

    - **features** (the default): ``feature_columns`` (numbers, or one column of equal-length lists), or every
      numeric column but the labels and weights; standardised with the training split's statistics. Batches carry
      ``x`` of shape ``(N, features)``.
    - **images**: ``images`` (an :class:`~aipflow.data.images.ImageOptions`: the column, an image folder's
      ``image``, a dataset's Image column, or file paths, relative to the table's folder). Decoded one row at a
      time in the loader's workers (nothing held in memory), converted to ``images.mode`` (``"RGB"`` or ``"L"``;
      detected from the training images when null), transformed with timm's transforms: for ``images.model`` (a
      timm name) its input size, interpolation, crop and normalisation, else the first image's size and the
      training split's per-channel statistics; ``images.size`` overrides the side. Training batches are augmented
      (timm's random resized crop with ``images.crop_scale``, flips with ``images.hflip``, colour jitter) unless
      ``images.augment`` is false. Batches carry ``x`` of shape ``(N, C, H, W)``.
    - **text**: ``text_column``; batches carry the strings as ``text``, for a ``collator`` that tokenises them in
      the loader's workers (:class:`aipflow.data.Collator`; the fine-tuning plugin's ``Tokenize``, whose settings,
      tokenizer and length, are the text options).

    Labels: ``label_column`` holds the clean labels: integer class ids, a ``ClassLabel`` (its names are kept in
    ``class_names``) or strings (mapped to ids in sorted order). Label noise on the training split either from the
    core's generators (``label_noise``, a :class:`~aipflow.data.noise.LabelNoise`, as for digits; validation and
    test stay clean; ``instance`` noise needs features), or read from ``noisy_label_column``: the training label is
    that column, the clean column is kept for evaluation and the realised noise rate and transition matrix are
    computed (``noise_report``).
    ``weight_column`` passes a per-row weight (e.g. annotator agreement) in each batch as ``weight`` (rows without
    one refused, or given ``weight_missing``); ``ClassificationTask(sample_weights=True)`` weights the loss by it.

    Label issues (``aipflow find-issues``): ``exclude_rows`` leaves training rows out and ``relabel`` changes their
    labels, by row id (``train_row_ids``: the row numbers of the source's train split), each given as a list /
    mapping or as the path of the ``label_issues.csv`` the command wrote (its flagged rows; relabelled to the
    suggested label).

    ``aipflow predict`` predicts the test split, or ``predict_source`` (any source as ``source``; the label
    column is optional there), prepared exactly as the validation split.

    Loading: ``num_workers`` null means none for features and text (rows are in memory already) and
    ``cores - 1`` (1 to 4) for images; ``pin_memory`` null means on when CUDA is available. The choice is printed.

    Args:
        source: the data (see :func:`aipflow.data.open_dataset`).
        num_classes: when given, labels must lie in ``[0, num_classes)``; else it is the number of classes found.
    """

    def __init__(
        self,
        source: str,
        label_column: str = "label",
        feature_columns: list[str] | None = None,
        images: ImageOptions | None = None,
        text_column: str | None = None,
        noisy_label_column: str | None = None,
        weight_column: str | None = None,
        weight_missing: float | None = None,
        num_classes: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        label_noise: LabelNoise = NO_LABEL_NOISE,
        collator: Collator | None = None,
        predict_source: str | None = None,
        exclude_rows: list[int] | str | None = None,
        relabel: dict[int, int | str] | str | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        shuffle_seed: int = 0,
        **legacy_options: Any,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        images = ImageOptions.of(images, legacy_options)
        legacy_noise = {k: v for k, v in legacy_options.items() if k not in LEGACY_IMAGE_OPTIONS}
        label_noise = LabelNoise.of(label_noise, legacy_noise, type(self).__name__)
        if label_noise.active and noisy_label_column is not None:
            raise ValueError(
                "data.label_noise and data.noisy_label_column exclude each other: the noisy column is the noise"
            )
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"data.num_classes must be >= 2, got {num_classes}")
        kinds = [
            name
            for name, given in (
                ("feature_columns", feature_columns),
                ("images", images),
                ("text_column", text_column),
            )
            if given is not None
        ]
        if len(kinds) > 1:
            raise ValueError(f"data.{kinds[0]} and data.{kinds[1]} exclude each other: one kind of input per module")
        if label_noise.kind == "instance" and (images or text_column):
            raise ValueError(
                "data.label_noise.kind='instance' draws flips from feature vectors; images and text have none here "
                "(use symmetric, pair or classmap noise, or a noisy_label_column)"
            )
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 or null (chosen for the input kind), got {num_workers}")
        # num_classes is not a hyperparameter here: Lightning merges the task's and the data module's for logging
        # and refuses one name with two values (the task's num_classes is the model's)
        # tensors and plain types only (the settings are saved as a dict below)
        self.save_hyperparameters(
            ignore=["num_classes", "collator", "label_noise", "images", *LEGACY_NOISE_OPTIONS, *LEGACY_IMAGE_OPTIONS]
        )
        self.label_noise, self.images = label_noise, images
        self.curation = Curation.of(exclude_rows, relabel)
        self.train_row_ids: np.ndarray | None = None
        self.unreadable_images: list[tuple[str, int, str]] = []
        self._source_rows: np.ndarray | None = None
        self.hparams["label_noise"] = label_noise.as_dict()
        self.hparams["images"] = None if images is None else images.as_dict()
        self.collator = collator
        self.expected_classes = num_classes
        self.kind = "images" if images is not None else "text" if text_column else "features"
        self.noise_report: NoisyLabels | None = None
        self.class_names: list[str] | None = None
        self.image: ImageSettings | None = None
        self.split_report = ""
        self.sets: dict[str, RowDataset] = {}
        self._input_shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------------------------------------- setup
    @property
    def train_size(self) -> int | None:
        return len(self.sets["train"]) if "train" in self.sets else None

    @property
    def num_classes(self) -> int:
        self.setup()
        return self._num_classes

    @property
    def train_set(self) -> RowDataset:
        """The training rows as evaluated (no augmentation): what monitors and estimators read."""
        self.setup()
        return self.sets["train_eval"] if "train_eval" in self.sets else self.sets["train"]

    @property
    def val_set(self) -> RowDataset:
        self.setup()
        return self.sets["val"]

    @property
    def test_set(self) -> RowDataset:
        self.setup()
        return self.sets["test"]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """``(features,)``, ``(channels, height, width)``, or None for text."""
        self.setup()
        return self._input_shape

    @property
    def num_features(self) -> int:
        shape = self.input_shape
        if shape is None:
            raise ValueError("a text data module has no feature count: its inputs are strings")
        return int(np.prod(shape))

    @property
    def num_workers(self) -> int:
        """The loader's workers: the one given, else none for rows in memory and cores - 1 (1 to 4) for images,
        whose decoding and augmentation would otherwise run between the training steps."""
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        return min(4, max(1, (os.cpu_count() or 2) - 1)) if self.kind == "images" else 0

    @property
    def pin_memory(self) -> bool:
        return torch.cuda.is_available() if self.hparams.pin_memory is None else self.hparams.pin_memory

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        hp = self.hparams
        splits = self.open_source()
        if "train" not in splits:
            raise ValueError(f"data.source={hp.source!r} has no train split (splits: {sorted(splits)})")
        if self.kind == "images":
            splits = self._readable_images(splits)
        tables = self._assign_splits(splits)
        labels = self._labels(tables)
        clean_train = torch.from_numpy(labels["train"])
        inputs = self._inputs(tables)
        if hp.noisy_label_column is not None:
            noisy = torch.from_numpy(self._label_ids(tables["train"], hp.noisy_label_column, "noisy_label_column"))
            self.noise_report = NoisyLabels(
                noisy=noisy,
                clean=clean_train,
                kind="column",
                rate=float("nan"),
                realised_rate=float((noisy != clean_train).float().mean()),
                transition_matrix=empirical_transition_matrix(clean_train, noisy, self._num_classes),
            )
        else:
            features = inputs["train"].x if self.kind == "features" else None
            self.noise_report = self.label_noise.apply(clean_train, self._num_classes, features=features)
        for name, table in tables.items():  # train, val, test
            clean = torch.from_numpy(labels[name])
            y = self.noise_report.noisy if name == "train" else clean
            weight = None
            if hp.weight_column is not None:
                column = _column(table, hp.weight_column, "weight_column", hp.source)
                values = np.asarray(column, dtype=np.float32)
                if hp.weight_missing is not None:
                    values = np.where(np.isnan(values), np.float32(hp.weight_missing), values)
                check_finite_features(values[:, None], f"data.weight_column={hp.weight_column!r}")
                weight = torch.from_numpy(values)
            self.sets[name] = RowDataset({"y": y.long(), "clean_y": clean.long(), "weight": weight}, inputs[name])
        if "train_eval" in inputs:
            train = self.sets["train"]
            self.sets["train_eval"] = RowDataset(
                {"y": train.y, "clean_y": train.clean_y, "weight": train.weight}, inputs["train_eval"]
            )
        self.curate(self.curation)
        if self.collator is not None:
            self.collator.check(self.sets["train"][0])
        shape = "text" if self._input_shape is None else "x".join(map(str, self._input_shape))
        rank_zero_info(
            f"[{hp.source}] {self.split_report}; {self._num_classes} classes, inputs {self.kind} ({shape})"
            + (f": {self.image.describe()}" if self.image is not None else "")
            + f"; training labels: {self.noise_report.summary()}; batch {hp.batch_size}, workers {self.num_workers}"
            + ("" if hp.num_workers is not None else " (default)")
            + f", pin_memory {self.pin_memory}"
            + ("" if hp.pin_memory is not None else " (default)")
        )

    def curate(self, curation: Curation) -> None:
        """Leave out or relabel training rows by their ids (``train_row_ids``: the row numbers of the source's train
        split); the label-issue callback calls it before training, the ``exclude_rows`` / ``relabel`` options at
        setup."""
        if not curation.active:
            return
        for name in ("train", "train_eval"):
            if name in self.sets:
                curated, kept = curation.apply(self.sets[name], self.train_row_ids, self.class_names, self._num_classes)
                self.sets[name] = curated
        self.train_row_ids = kept
        rank_zero_info(f"[{self.hparams.source}] {curation.describe()}")

    def open_source(self) -> dict:
        """Every split of the source as ``{name: datasets.Dataset}``; a subclass with its own source overrides
        this (the rest of setup is the same)."""
        return open_dataset(self.hparams.source, "data.source")

    def _inputs(self, tables: dict) -> dict[str, Callable[[int], dict[str, Any]]]:
        hp = self.hparams
        if self.kind == "features":
            features = self._features(tables)
            mean, scale = self._scale = feature_scale(features["train"], np.arange(len(features["train"])))
            self._input_shape = (int(features["train"].shape[1]),)
            return {
                name: _FeatureInputs(torch.from_numpy(((x - mean) / scale).astype(np.float32)))
                for name, x in features.items()
            }
        if self.kind == "text":
            for table in tables.values():
                if not _is_text(table, hp.text_column, hp.source, "text_column"):
                    raise ValueError(f"data.text_column={hp.text_column!r} must hold strings")
            return {name: _TextInputs(table, hp.text_column) for name, table in tables.items()}
        options = self.images
        column = options.column
        train = tables["train"]
        _column(train, column, "images.column", hp.source)
        base = Path(hp.source).parent if Path(hp.source).is_file() else None
        cells = undecoded(train, column)
        rows = torch.randperm(len(cells), generator=torch.Generator().manual_seed(hp.split_seed))[:STATISTICS_SAMPLE]
        sample = [
            decode_image(
                cells[int(i)][column], None, f"data.images.column={column!r}: row {int(i)} of the train split", base
            )
            for i in rows
        ]
        self.image = options.settings(sample)
        self._input_shape = self.image.input_size
        out = {}
        for name, table in tables.items():
            transform = options.transform(self.image, training=name == "train")
            out[name] = ImageInputs(table, column, name, self.image.mode, transform, base)
        if options.augment:
            evaluation = options.transform(self.image, training=False)
            out["train_eval"] = ImageInputs(tables["train"], column, "train", self.image.mode, evaluation, base)
        return out

    def _readable_images(self, splits: dict) -> dict:
        """Every image decoded once before training (a broken file stops the run here, not at the batch that
        meets it): one line naming the first that does not decode, or with ``images.unreadable='skip'`` those rows
        left out, counted and named (``unreadable_images``: ``(split, row, error)``)."""
        import sys

        options, source = self.images, self.hparams.source
        _column(splits["train"], options.column, "images.column", source)
        base = Path(source).parent if Path(source).is_file() else None
        self.unreadable_images = []
        out = {}
        for name, table in splits.items():
            bad = unreadable_rows(table, options.column, name, base, progress=sys.stderr.isatty())
            if bad and options.unreadable == "error":
                row, error = bad[0]
                raise ValueError(
                    f"data.images.column={options.column!r}: {len(bad)} of {len(table)} {name} images do not decode, "
                    f"the first: {error} (data.images.unreadable='skip' leaves such rows out)"
                )
            self.unreadable_images += [(name, row, error) for row, error in bad]
            keep = np.setdiff1d(np.arange(len(table)), [row for row, _ in bad])
            out[name] = table.select(keep) if bad else table
            if name == "train" and bad:
                self._source_rows = keep  # the source's row id of each kept training row
        if self.unreadable_images:
            shown = "; ".join(f"{name} row {row}: {error}" for name, row, error in self.unreadable_images[:5])
            more = len(self.unreadable_images) - 5
            rest = f"; and {more} more, in the data module's unreadable_images)" if more > 0 else ")"
            rank_zero_warn(
                f"[{source}] data.images.unreadable='skip': {len(self.unreadable_images)} images do not decode and "
                f"are left out ({shown}{rest}"
            )
        return out

    def _assign_splits(self, splits: dict) -> dict:
        hp = self.hparams
        validation = next((splits[n] for n in _VALIDATION_NAMES if n in splits), None)
        test = splits.get("test")
        train = splits["train"]
        carve_val, carve_test = validation is None, test is None
        parts = {"train": train, "val": validation, "test": test}
        if carve_val or carve_test:
            strata = self._label_ids(train, hp.label_column, "label_column", provisional=True)
            _check_strata(train, hp.label_column, strata, self.expected_classes)
            if carve_val and carve_test:
                rows_train, rows_val, rows_test = stratified_split(
                    strata, hp.val_fraction, hp.test_fraction, hp.split_seed
                )
                parts["val"], parts["test"] = train.select(np.sort(rows_val)), train.select(np.sort(rows_test))
            else:
                fraction = hp.val_fraction if carve_val else hp.test_fraction
                rows_train, rows_held = _carve(strata, fraction, hp.split_seed)
                parts["val" if carve_val else "test"] = train.select(np.sort(rows_held))
            parts["train"] = train.select(np.sort(rows_train))
        self.train_row_ids = np.sort(rows_train) if carve_val or carve_test else np.arange(len(train))
        if self._source_rows is not None:  # rows left out as unreadable: ids stay the source's
            self.train_row_ids = self._source_rows[self.train_row_ids]
        own = [n for n, carved in (("validation", carve_val), ("test", carve_test)) if not carved]
        carved = [n for n, c in (("validation", carve_val), ("test", carve_test)) if c]
        self.split_report = (
            f"splits train {len(parts['train'])} / val {len(parts['val'])} / test {len(parts['test'])}"
            + (f" (the source's own {', '.join(own)})" if own else "")
            + (f" ({', '.join(carved)} carved from train, stratified, seed {hp.split_seed})" if carved else "")
        )
        for name, table in parts.items():
            if len(table) == 0:
                raise ValueError(f"data.source={hp.source!r}: the {name} split is empty; change the fractions")
        return parts

    def _labels(self, tables: dict) -> dict[str, np.ndarray]:
        hp = self.hparams
        feature = tables["train"].features.get(hp.label_column)
        names = getattr(feature, "names", None)
        if names is None and _is_text(tables["train"], hp.label_column, hp.source):
            found = set()
            for table in tables.values():
                found |= {str(v) for v in _column(table, hp.label_column, "label_column", hp.source)}
            names = sorted(found)
        self.class_names = list(names) if names is not None else None
        labels = {n: self._label_ids(t, hp.label_column, "label_column") for n, t in tables.items()}
        found_k = int(max(int(v.max()) for v in labels.values())) + 1
        k = self.expected_classes or (len(names) if names is not None else found_k)
        for name, values in labels.items():
            if values.min() < 0 or values.max() >= k:
                raise ValueError(
                    f"data.label_column={hp.label_column!r}: the {name} split has class ids in "
                    f"[{int(values.min())}, {int(values.max())}], expected [0, {k - 1}]"
                    + (" (data.num_classes)" if self.expected_classes else "")
                )
        absent = sorted(set(range(k)) - set(np.unique(labels["train"]).tolist()))
        if absent:
            shown = [self.class_names[c] for c in absent] if self.class_names else absent
            raise ValueError(
                f"data.label_column={hp.label_column!r}: classes {shown} never occur in the training split"
            )
        self._num_classes = k
        return labels

    def _label_ids(self, table, column: str, field: str, provisional: bool = False) -> np.ndarray:
        """Integer class ids of ``column``: a ClassLabel's ids, strings by ``class_names``, or integers."""
        hp = self.hparams
        values = _column(table, column, field, hp.source)
        if _is_text(table, column, hp.source):
            if provisional:  # stratifying before the class names are fixed: any consistent ids will do
                return np.unique(np.asarray(values, dtype=str), return_inverse=True)[1]
            index = {name: i for i, name in enumerate(self.class_names or [])}
            unknown = sorted({str(v) for v in values} - set(index))
            if unknown:
                raise ValueError(
                    f"data.{field}={column!r} holds classes {unknown[:5]} that the clean labels "
                    f"({hp.label_column!r}) do not have: {self.class_names}"
                )
            return np.asarray([index[str(v)] for v in values], dtype=np.int64)
        array = np.asarray(values)
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                raise ValueError(f"data.{field}={column!r} must hold class ids (integers or names), got floats")
            array = array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise ValueError(f"data.{field}={column!r} must hold class ids (integers or names), got {array.dtype}")
        return array.astype(np.int64)

    def _features(self, tables: dict) -> dict[str, np.ndarray]:
        hp = self.hparams
        train = tables["train"]
        skip = {hp.label_column, hp.noisy_label_column, hp.weight_column}
        columns = hp.feature_columns
        if columns is None:
            columns = [
                c
                for c in train.column_names
                if c not in skip and getattr(train.features[c], "dtype", "").startswith(("int", "float", "bool"))
            ]
            if not columns:
                raise ValueError(
                    f"data.source={hp.source!r} has no numeric feature columns (columns: {train.column_names}); "
                    "name them with data.feature_columns"
                )
            left_out = [c for c in train.column_names if c not in skip and c not in columns]
            for column in left_out:
                _refuse_mostly_numeric(train, column, hp.source, self.train_row_ids)
            if left_out:
                rank_zero_info(
                    f"[{hp.source}] feature columns: the {len(columns)} numeric ones; left out, not numbers: "
                    f"{left_out} (name the features with data.feature_columns to choose)"
                )
        self._feature_columns = list(columns)
        return {
            name: self._feature_matrix(table, f"data.source={hp.source!r} ({name} split)")
            for name, table in tables.items()
        }

    def _feature_matrix(self, table, where: str) -> np.ndarray:
        parts = []
        for column in self._feature_columns:
            values = np.asarray(_column(table, column, "feature_columns", self.hparams.source), dtype=np.float32)
            parts.append(values.reshape(len(table), -1))
        x = np.concatenate(parts, axis=1)
        check_finite_features(x, where, columns=self._feature_columns)
        return x

    # ----------------------------------------------------------------------------------------------- loaders
    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows to a batch, in the loader's workers: the ``collator`` (e.g. a tokenizer), else torch's default
        (tensors stacked, strings listed)."""
        return self.collator(rows) if self.collator is not None else default_collate(rows)

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None) -> DataLoader:
        # keyword arguments only: Lightning re-creates loaders (predict, DDP) from their keyword arguments. Workers
        # start afresh each epoch, seeded from the main process's generator (which checkpoints hold), so random
        # augmentation in a resumed run repeats the uninterrupted one; persistent workers would carry their own
        # generator state across epochs, which no checkpoint sees
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(len(self.sets["train"]), self.hparams.shuffle_seed, training_epoch(self))
        return self._loader(self.sets["train"], self.hparams.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.sets["val"], 4 * self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.sets["test"], 4 * self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The test split (with its labels), or ``predict_source``'s rows."""
        self.setup()
        if self.hparams.predict_source is None:
            return self.test_dataloader()
        return self._loader(self._predict_rows(), 4 * self.hparams.batch_size)

    def _predict_rows(self) -> RowDataset:
        """``predict_source`` read and transformed exactly as the validation split (features scaled with the
        training statistics, images with the evaluation transform, text untouched); labels when it has the label
        column (-1 where it does not)."""
        import datasets as hf

        hp = self.hparams
        splits = open_dataset(hp.predict_source, "data.predict_source")
        table = hf.concatenate_datasets(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
        if self.kind == "features":
            mean, scale = self._scale
            x = (self._feature_matrix(table, f"data.predict_source={hp.predict_source!r}") - mean) / scale
            inputs: Callable[[int], dict[str, Any]] = _FeatureInputs(torch.from_numpy(x.astype(np.float32)))
        elif self.kind == "text":
            _column(table, hp.text_column, "text_column", hp.predict_source)
            inputs = _TextInputs(table, hp.text_column)
        else:
            column = self.images.column
            _column(table, column, "images.column", hp.predict_source)
            path = Path(hp.predict_source)
            base = path.parent if path.is_file() else None
            transform = self.images.transform(self.image, training=False)
            inputs = ImageInputs(table, column, "predict", self.image.mode, transform, base)
        if hp.label_column in table.column_names:
            labels = torch.from_numpy(self._label_ids(table, hp.label_column, "label_column"))
        else:
            labels = torch.full((len(table),), -1, dtype=torch.long)
        return RowDataset({"y": labels, "clean_y": labels}, inputs)


def _carve(strata: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows kept and rows held out (``fraction`` of them, stratified, seeded)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"a held-out fraction must lie in (0, 1), got {fraction}")
    return train_test_split(np.arange(len(strata)), test_size=fraction, stratify=strata, random_state=seed)


def _column(table, column: str, field: str, source: str):
    if column not in table.column_names:
        raise ValueError(f"data.{field}={column!r} is not a column of {source!r} (columns: {table.column_names})")
    return table[column]


def _check_strata(table, column: str, strata: np.ndarray, expected: int | None) -> None:
    """Before a stratified split (scikit-learn's messages name neither the column nor the row): a class id outside
    ``[0, num_classes)``, or a class with a single row (it cannot be on both sides of a split), in one line."""
    values = table[column]
    if expected is not None and strata.dtype.kind in "iu" and not isinstance(values[0], str):
        outside = np.flatnonzero((strata < 0) | (strata >= expected))
        if outside.size:
            row = int(outside[0])
            raise ValueError(
                f"data.label_column={column!r}: row {row} has label {values[row]}, outside [0, {expected}) "
                f"(data.num_classes={expected}; {outside.size} such rows)"
            )
    ids, first, counts = np.unique(strata, return_index=True, return_counts=True)
    single = np.flatnonzero(counts < 2)
    if single.size:
        row = int(first[single[0]])
        raise ValueError(
            f"data.label_column={column!r}: class {values[row]!r} has a single row (row {row}); a stratified split "
            f"needs at least 2 rows of every class ({single.size} such classes: fix the label, or drop the row)"
        )


def _refuse_mostly_numeric(table, column: str, source: str, row_ids: np.ndarray | None) -> None:
    """A text column whose cells are numbers but for a few is a feature column with a typo (``"abc"`` among 784
    pixel columns), not text: leaving it out would train on one feature fewer without a word. One line naming the
    column, the row and the value."""
    values = table[column]
    if not values or not isinstance(values[0], (str, type(None))):
        return
    bad = []
    for row, value in enumerate(values):
        try:
            float(value)
        except (TypeError, ValueError):
            bad.append((row, value))
            if len(bad) > len(values) // 2:
                return  # mostly not numbers: a text column (left out, and said so)
    if bad:
        row, value = bad[0]
        row = int(row_ids[row]) if row_ids is not None else row
        raise ValueError(
            f"data.source={source!r}: column {column!r} holds numbers but row {row} has {value!r} "
            f"({len(bad)} such cells): fix the cell, or name the features with data.feature_columns to leave the "
            "column out"
        )


def _is_text(table, column: str, source: str, field: str = "label_column") -> bool:
    _column(table, column, field, source)
    return getattr(table.features[column], "dtype", "") in ("string", "large_string")
