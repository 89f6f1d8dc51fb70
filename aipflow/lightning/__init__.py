"""What makes multi-pass optimizers, Bayesian evaluation and resuming correct inside ``lightning.Trainer``."""

from aipflow.lightning.checkpoint import ModelCheckpoint, RNGStateCheckpoint
from aipflow.lightning.guards import LostProcessExplainer, NonFiniteGuard
from aipflow.lightning.sharpness import AutomaticSharpnessAwareTraining, SharpnessAwareTraining

__all__ = [
    "AutomaticSharpnessAwareTraining",
    "LostProcessExplainer",
    "ModelCheckpoint",
    "NonFiniteGuard",
    "RNGStateCheckpoint",
    "SharpnessAwareTraining",
]
