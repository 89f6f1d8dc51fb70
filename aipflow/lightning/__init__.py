"""Everything aipflow adds to ``lightning.Trainer``, one callback per module: what makes multi-pass optimizers,
Bayesian evaluation and resuming correct (``multi_pass``, ``checkpoint``, ``guards``), the monitors
(``label_noise_monitor``, ``sharpness_monitor``), the transition-matrix estimation and its cross-fitting
(``transition_matrix``, ``cross_fit``), label issues and prune-and-retrain (``label_issue_pruning``), and the
defaults every trainer gets (``defaults``)."""

from aipflow.lightning.checkpoint import CheckpointError, ModelCheckpoint, RNGStateCheckpoint, check_checkpoint_file
from aipflow.lightning.cross_fit import out_of_fold_posteriors
from aipflow.lightning.defaults import command_callbacks, default_callbacks
from aipflow.lightning.guards import LostProcessExplainer, NonFiniteGuard
from aipflow.lightning.label_issue_pruning import IssueSearch, LabelIssuePruning, search_label_issues
from aipflow.lightning.label_noise_monitor import LabelNoiseMonitor
from aipflow.lightning.multi_pass import AutomaticSharpnessAwareTraining, SharpnessAwareTraining
from aipflow.lightning.sharpness_monitor import SharpnessMonitor
from aipflow.lightning.transition_matrix import TransitionMatrixEstimation

__all__ = [
    "AutomaticSharpnessAwareTraining",
    "CheckpointError",
    "IssueSearch",
    "LabelIssuePruning",
    "LabelNoiseMonitor",
    "LostProcessExplainer",
    "ModelCheckpoint",
    "NonFiniteGuard",
    "RNGStateCheckpoint",
    "SharpnessAwareTraining",
    "SharpnessMonitor",
    "TransitionMatrixEstimation",
    "check_checkpoint_file",
    "command_callbacks",
    "default_callbacks",
    "out_of_fold_posteriors",
    "search_label_issues",
]
