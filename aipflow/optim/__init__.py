"""Sharpness-aware, Bayesian and Langevin optimizers (one per file) and their functional step seam
(``_functional``)."""

from aipflow.optim._base import MultiPassOptimizer
from aipflow.optim.bsam import BSAM
from aipflow.optim.ivon import IVON
from aipflow.optim.psgld import PSGLD
from aipflow.optim.sam import ASAM, SAM
from aipflow.optim.schedules import PolynomialDecayLR
from aipflow.optim.sgld import SGLD

__all__ = ["ASAM", "BSAM", "IVON", "PSGLD", "SGLD", "MultiPassOptimizer", "PolynomialDecayLR", "SAM"]
