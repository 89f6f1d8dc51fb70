"""What every class-prior estimator shares: input checks, the prior of the unlabelled sample from the label
frequency ``c``, and stratified bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class PriorEstimate:
    prior: float  # class prior of the unlabelled sample (what the PU risks need)
    c: float  # label frequency p(s = 1 | y = 1) of the pooled labelled + unlabelled rows
    method: str
    interval: tuple[float, float] | None = None  # bootstrap percentile interval (95 %)


def check_pu_sample(x, s) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as float64 rows and ``s`` as 0/1 (1 labelled positive, 0 unlabelled), both sets non-empty."""
    s = np.asarray(s)
    if s.ndim != 1:
        raise ValueError(f"s must be a vector of 0/1 labels, got shape {s.shape}")
    if not np.isin(s, (0, 1)).all():
        raise ValueError(f"s must hold 0 (unlabelled) or 1 (labelled positive), got values {np.unique(s)[:5]}")
    x = np.asarray(x, dtype=np.float64).reshape(len(s), -1)
    s = s.astype(np.int64)
    if s.sum() == 0:
        raise ValueError("prior estimation needs labelled positives: the positive set is empty")
    if (s == 0).sum() == 0:
        raise ValueError("prior estimation needs unlabelled samples: the unlabelled set is empty")
    return x, s


def prior_from_c(c: float, s: np.ndarray) -> float:
    """SCAR: ``n_labeled / c`` positives among the pooled rows, so the unlabelled rows hold the rest of them."""
    n_labeled, n_unlabeled = int(s.sum()), int((s == 0).sum())
    return float(np.clip((n_labeled / max(c, 1e-12) - n_labeled) / n_unlabeled, 1e-6, 1 - 1e-6))


def c_from_prior(prior: float, s: np.ndarray) -> float:
    n_labeled, n_unlabeled = int(s.sum()), int((s == 0).sum())
    return float(n_labeled / (n_labeled + prior * n_unlabeled))


def bootstrap_interval(
    estimate: Callable[[np.ndarray, np.ndarray, np.random.Generator], float],
    x: np.ndarray,
    s: np.ndarray,
    n_bootstrap: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``estimate(x, s, rng)`` (a prior) over resamples drawn with replacement within the
    labelled and within the unlabelled rows (their sizes are part of the design, so they stay fixed)."""
    labeled, unlabeled = np.flatnonzero(s == 1), np.flatnonzero(s == 0)
    draws = []
    for _ in range(n_bootstrap):
        idx = np.concatenate(
            [rng.choice(labeled, len(labeled), replace=True), rng.choice(unlabeled, len(unlabeled), replace=True)]
        )
        try:
            draws.append(estimate(x[idx], s[idx], rng))
        except ValueError:  # a degenerate resample (e.g. one class in a split): skip it
            continue
    if not draws:
        raise ValueError("every bootstrap resample failed; the sample is too small for an interval")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))
