"""Where the noisy-label callbacks lived before every callback moved under :mod:`aipflow.lightning` (one module
each): kept so that earlier imports and saved configs (``aipflow.callbacks.TransitionMatrixEstimation``) still work.
New code imports from :mod:`aipflow.lightning`; this module warns (api 1.5) and goes in api 2.0."""

import warnings

from aipflow.lightning.cross_fit import out_of_fold_posteriors
from aipflow.lightning.label_noise_monitor import LabelNoiseMonitor
from aipflow.lightning.transition_matrix import TransitionMatrixEstimation

warnings.warn(
    "aipflow.callbacks moved to aipflow.lightning (LabelNoiseMonitor, TransitionMatrixEstimation, "
    "out_of_fold_posteriors; api 1.5); the old module goes in api 2.0",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["LabelNoiseMonitor", "TransitionMatrixEstimation", "out_of_fold_posteriors"]
