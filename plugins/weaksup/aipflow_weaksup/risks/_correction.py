"""The correction functions of the non-negative estimators (nnUU, Pcomp): each partial risk estimates a
non-negative quantity, so ``relu`` clips it at zero and ``abs`` reflects it (Lu et al. 2020; Feng et al. 2021)."""

from __future__ import annotations

from torch import Tensor

CORRECTIONS = ("none", "relu", "abs")


def check_correction(correction: str) -> None:
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")


def corrected_sum(positive: Tensor, negative: Tensor, correction: str) -> Tensor:
    if correction == "relu":
        return positive.clamp_min(0) + negative.clamp_min(0)
    if correction == "abs":
        return positive.abs() + negative.abs()
    return positive + negative
