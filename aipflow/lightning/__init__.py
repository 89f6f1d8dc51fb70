"""What makes multi-pass optimizers, Bayesian evaluation and resuming correct inside ``lightning.Trainer``."""

from aipflow.lightning.checkpoint import CheckpointError, ModelCheckpoint, RNGStateCheckpoint, check_checkpoint_file
from aipflow.lightning.defaults import command_callbacks, default_callbacks
from aipflow.lightning.guards import LostProcessExplainer, NonFiniteGuard
from aipflow.lightning.sharpness import AutomaticSharpnessAwareTraining, SharpnessAwareTraining

__all__ = [
    "AutomaticSharpnessAwareTraining",
    "CheckpointError",
    "LostProcessExplainer",
    "ModelCheckpoint",
    "NonFiniteGuard",
    "RNGStateCheckpoint",
    "SharpnessAwareTraining",
    "check_checkpoint_file",
    "command_callbacks",
    "default_callbacks",
]
