"""Class-prior estimation from positive and unlabelled data.

Elkan & Noto (KDD 2008): fit a probabilistic classifier ``g(x) ~ p(s = 1 | x)`` (labelled vs unlabelled) on part
of the data and, on the held-out part V with labelled subset P, estimate ``c = p(s = 1 | y = 1)`` by

    e1 = mean_{x in P} g(x)      e2 = sum_{x in P} g(x) / sum_{x in V} g(x)      e3 = max_{x in V} g(x)

Labelled positives are a uniform sample of all positives (SCAR), so ``n_pos = n_labeled / c`` and the class
prior of the unlabelled set is ``(n_pos - n_labeled) / n_unlabeled``. Bootstrap resampling of the whole set gives
a percentile confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("e1", "e2", "e3")


@dataclass
class PriorEstimate:
    prior: float  # class prior of the unlabelled set
    c: float  # p(s = 1 | y = 1)
    method: str
    interval: tuple[float, float] | None = None  # bootstrap percentile interval (95 %)


def _estimate_c(x: np.ndarray, s: np.ndarray, method: str, holdout: float, rng: np.random.Generator) -> float:
    from sklearn.linear_model import LogisticRegression

    order = rng.permutation(len(s))
    cut = int(len(s) * (1 - holdout))
    fit_idx, val_idx = order[:cut], order[cut:]
    if s[fit_idx].min() == s[fit_idx].max() or s[val_idx].sum() == 0:
        raise ValueError("prior estimation needs labelled and unlabelled samples in both halves of the split")
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(x[fit_idx], s[fit_idx])
    g = clf.predict_proba(x[val_idx])[:, 1]
    p = g[s[val_idx] == 1]
    if method == "e1":
        return float(p.mean())
    if method == "e2":
        return float(p.sum() / g.sum())
    return float(g.max())


def _prior_from_c(c: float, s: np.ndarray) -> float:
    n_labeled, n_unlabeled = int(s.sum()), int((s == 0).sum())
    return float(np.clip((n_labeled / c - n_labeled) / n_unlabeled, 1e-6, 1 - 1e-6))


def elkan_noto_prior(
    x, s, method: str = "e1", holdout: float = 0.3, n_bootstrap: int = 0, seed: int = 0
) -> PriorEstimate:
    """The class prior of the unlabelled part of ``(x, s)`` (``s`` 1 = labelled positive, 0 = unlabelled)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = np.asarray(x, dtype=np.float64).reshape(len(s), -1)
    s = np.asarray(s).astype(np.int64)
    if s.sum() == 0:
        raise ValueError("prior estimation needs labelled positives: the positive set is empty")
    if (s == 0).sum() == 0:
        raise ValueError("prior estimation needs unlabelled samples: the unlabelled set is empty")
    rng = np.random.default_rng(seed)
    c = _estimate_c(x, s, method, holdout, rng)
    estimate = PriorEstimate(_prior_from_c(c, s), c, method)
    if n_bootstrap:
        draws = []
        for _ in range(n_bootstrap):
            idx = rng.integers(0, len(s), len(s))
            try:
                draws.append(_prior_from_c(_estimate_c(x[idx], s[idx], method, holdout, rng), s[idx]))
            except ValueError:
                continue
        estimate.interval = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)))
    return estimate
