"""Sharpness-aware, Bayesian and Langevin optimizers (one per file), each with its functional form in
:mod:`aipflow.optim.functional` (step functions over lists of tensors, the one seam to the backends)."""

from aipflow.optim._base import MultiPassOptimizer, OptionError, build_optimizer
from aipflow.optim.bsam import BSAM
from aipflow.optim.ivon import IVON
from aipflow.optim.psgld import PSGLD
from aipflow.optim.sam import ASAM, SAM
from aipflow.optim.schedules import PolynomialDecayLR
from aipflow.optim.sgld import SGLD

__all__ = [
    "ASAM",
    "BSAM",
    "IVON",
    "PSGLD",
    "SGLD",
    "MultiPassOptimizer",
    "OptionError",
    "PolynomialDecayLR",
    "SAM",
    "build_optimizer",
]
