from aipflow.data.checks import check_finite_features
from aipflow.data.digits import DigitsDataModule, IndexedDataset
from aipflow.data.noise import NoisyLabels, apply_label_noise, pair_flip_noise, symmetric_noise

__all__ = [
    "check_finite_features",
    "DigitsDataModule",
    "IndexedDataset",
    "NoisyLabels",
    "apply_label_noise",
    "pair_flip_noise",
    "symmetric_noise",
]
