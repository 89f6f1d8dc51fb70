from aipflow.data.digits import DigitsDataModule, IndexedDataset
from aipflow.data.noise import NoisyLabels, apply_label_noise, pair_flip_noise, symmetric_noise

__all__ = [
    "DigitsDataModule",
    "IndexedDataset",
    "NoisyLabels",
    "apply_label_noise",
    "pair_flip_noise",
    "symmetric_noise",
]
