"""Sharpness-aware and Bayesian optimizers (one per file) and their functional step seam (``_functional``)."""

from aipflow.optim._base import MultiPassOptimizer
from aipflow.optim.bsam import BSAM
from aipflow.optim.ivon import IVON
from aipflow.optim.sam import ASAM, SAM

__all__ = ["ASAM", "BSAM", "IVON", "MultiPassOptimizer", "SAM"]
