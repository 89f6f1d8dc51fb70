"""BBE, Best Bin Estimation (Garg, Wu, Smola, Balakrishnan & Lipton, NeurIPS 2021).

A labelled-vs-unlabelled classifier's scores z rank the rows. For a threshold t let ``q_P(t)`` and ``q_U(t)`` be
the fractions of labelled-positive and unlabelled rows scoring at least t. Under SCAR the unlabelled positives
score like the labelled ones, so ``q_U(t) = kappa q_P(t) + (1 - kappa) q_N(t) >= kappa q_P(t)``, with equality
where the top bin ``{z >= t}`` holds no negatives. BBE picks the threshold with the lowest upper confidence bound
of the ratio and returns the ratio there:

    t_hat = argmin_t  q_U(t) / q_P(t) + (1 + gamma) eps / q_P(t),
    eps = sqrt(log(4 / delta) / (2 n_P)) + sqrt(log(4 / delta) / (2 n_U)),
    kappa_hat = q_U(t_hat) / q_P(t_hat),

with the paper's delta = 0.1, gamma = 0.01. The scores here are out-of-fold (:mod:`._scores`): logistic
regression by default, or a copy of any torch network (the task's model with ``prior_estimator: bbe``).
"""

from __future__ import annotations

import numpy as np

from aipflow_weaksup.prior._common import PriorEstimate, bootstrap_interval, c_from_prior, check_pu_sample
from aipflow_weaksup.prior._scores import out_of_fold_scores


def best_bin_kappa(
    positive_scores: np.ndarray, unlabeled_scores: np.ndarray, delta: float = 0.1, gamma: float = 0.01
) -> float:
    """The proportion of the positives' score distribution in the unlabelled scores' (``kappa_hat`` above)."""
    if not 0 < delta < 1 or gamma < 0:
        raise ValueError(f"BBE needs delta in (0, 1) and gamma >= 0, got delta={delta}, gamma={gamma}")
    p, u = np.sort(np.asarray(positive_scores, float)), np.sort(np.asarray(unlabeled_scores, float))
    if len(p) == 0 or len(u) == 0:
        raise ValueError("BBE needs labelled-positive and unlabelled scores")
    thresholds = np.unique(np.concatenate([p, u]))
    q_p = (len(p) - np.searchsorted(p, thresholds, side="left")) / len(p)  # fraction scoring >= t
    q_u = (len(u) - np.searchsorted(u, thresholds, side="left")) / len(u)
    keep = q_p > 0
    q_p, q_u = q_p[keep], q_u[keep]
    slack = np.sqrt(np.log(4 / delta) / (2 * len(p))) + np.sqrt(np.log(4 / delta) / (2 * len(u)))
    best = np.argmin(q_u / q_p + (1 + gamma) * slack / q_p)
    return float(q_u[best] / q_p[best])


def best_bin_prior(
    x,
    s,
    classifier=None,
    folds: int = 5,
    delta: float = 0.1,
    gamma: float = 0.01,
    n_bootstrap: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> PriorEstimate:
    """The class prior of the unlabelled rows of ``(x, s)`` (``s`` 1 = labelled positive, 0 = unlabelled).

    ``classifier``: ``None`` (logistic regression) or a torch network template (see :mod:`._scores`). The
    bootstrap interval resamples the out-of-fold scores (the fitted classifiers are kept: the interval covers the
    sampling of the rows given the scorer, not the scorer's own training noise)."""
    x, s = check_pu_sample(x, s)
    rng = np.random.default_rng(seed)
    scores = out_of_fold_scores(x, s, classifier, folds=folds, seed=seed, progress=progress)

    def estimate(zb: np.ndarray, sb: np.ndarray, r: np.random.Generator) -> float:
        zb = zb.reshape(-1)
        return float(np.clip(best_bin_kappa(zb[sb == 1], zb[sb == 0], delta, gamma), 1e-6, 1 - 1e-6))

    prior = estimate(scores, s, rng)
    result = PriorEstimate(prior, c_from_prior(prior, s), "bbe")
    if n_bootstrap:
        result.interval = bootstrap_interval(estimate, scores[:, None], s, n_bootstrap, rng)
    return result
