from aipflow.data.checks import check_finite_features
from aipflow.data.collate import Collator
from aipflow.data.curation import Curation
from aipflow.data.digits import DigitsDataModule
from aipflow.data.examples import write_digits_image_folder, write_table
from aipflow.data.hf import HFDataModule
from aipflow.data.images import ImageOptions
from aipflow.data.noise import LabelNoise, NoisyLabels, apply_label_noise, pair_flip_noise, symmetric_noise
from aipflow.data.rows import IndexedDataset, RowDataset
from aipflow.data.sources import open_dataset, package_path
from aipflow.data.splits import EpochShuffleSampler, feature_scale, stratified_split, training_epoch

__all__ = [
    "check_finite_features",
    "Collator",
    "Curation",
    "DigitsDataModule",
    "EpochShuffleSampler",
    "HFDataModule",
    "ImageOptions",
    "IndexedDataset",
    "LabelNoise",
    "NoisyLabels",
    "apply_label_noise",
    "feature_scale",
    "open_dataset",
    "package_path",
    "RowDataset",
    "pair_flip_noise",
    "stratified_split",
    "symmetric_noise",
    "write_digits_image_folder",
    "write_table",
    "training_epoch",
]
