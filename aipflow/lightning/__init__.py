"""What makes multi-pass optimizers and Bayesian evaluation correct inside ``lightning.Trainer``."""

from aipflow.lightning.sharpness import AutomaticSharpnessAwareTraining, SharpnessAwareTraining

__all__ = ["AutomaticSharpnessAwareTraining", "SharpnessAwareTraining"]
