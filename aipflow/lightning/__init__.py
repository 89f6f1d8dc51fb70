"""What makes multi-pass optimizers and Bayesian evaluation correct inside ``lightning.Trainer``."""

from aipflow.lightning.sharpness import SharpnessAwareTraining

__all__ = ["SharpnessAwareTraining"]
