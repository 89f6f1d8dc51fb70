"""Elkan & Noto (KDD 2008): fit a probabilistic classifier ``g(x) ~ p(s = 1 | x)`` (labelled vs unlabelled) on
part of the rows and, on the held-out part V with labelled subset P, estimate ``c = p(s = 1 | y = 1)`` by

    e1 = mean_{x in P} g(x)      e2 = sum_{x in P} g(x) / sum_{x in V} g(x)      e3 = max_{x in V} g(x)

(logistic regression for g, as in the paper's experiments).
"""

from __future__ import annotations

import numpy as np

from aipflow_weaksup.prior._common import PriorEstimate, bootstrap_interval, check_pu_sample, prior_from_c

METHODS = ("e1", "e2", "e3")


def elkan_noto_c(x: np.ndarray, s: np.ndarray, method: str, holdout: float, rng: np.random.Generator) -> float:
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


def elkan_noto_prior(
    x, s, method: str = "e1", holdout: float = 0.3, n_bootstrap: int = 0, seed: int = 0
) -> PriorEstimate:
    """The class prior of the unlabelled part of ``(x, s)`` (``s`` 1 = labelled positive, 0 = unlabelled)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x, s = check_pu_sample(x, s)
    rng = np.random.default_rng(seed)
    c = elkan_noto_c(x, s, method, holdout, rng)
    estimate = PriorEstimate(prior_from_c(c, s), c, method)
    if n_bootstrap:
        estimate.interval = bootstrap_interval(
            lambda xb, sb, r: prior_from_c(elkan_noto_c(xb, sb, method, holdout, r), sb), x, s, n_bootstrap, rng
        )
    return estimate
