"""Class-prior (mixture-proportion) estimation from positive and unlabelled data: one registry, one call.

``estimate_prior(x, s, method)`` returns the class prior of the unlabelled rows of ``(x, s)`` (``s`` 1 =
labelled positive, 0 = unlabelled; the labelled positives a uniform sample of all positives, SCAR), with a 95 %
bootstrap interval when ``n_bootstrap`` > 0:

- ``e1`` / ``e2`` / ``e3``: Elkan & Noto (KDD 2008), from a labelled-vs-unlabelled classifier;
- ``km1`` / ``km2``: Ramaswamy, Scott & Tewari (ICML 2016), kernel mean embedding;
- ``tice``: Bekker & Davis (AAAI 2018), tree induction for the label frequency;
- ``bbe``: Garg et al. (NeurIPS 2021), best bin estimation on a classifier's out-of-fold scores.

Elkan-Noto's classifier is logistic regression (as in the paper); BBE's is ``classifier``: logistic regression
when ``None``, or a torch network to copy (``WeakBinaryTask`` passes its own model).
"""

from __future__ import annotations

from aipflow_weaksup.prior._common import PriorEstimate
from aipflow_weaksup.prior.best_bin import best_bin_prior
from aipflow_weaksup.prior.elkan_noto import elkan_noto_prior
from aipflow_weaksup.prior.kernel_mean import kernel_mean_prior
from aipflow_weaksup.prior.tice import tice_prior

METHODS = ("e1", "e2", "e3", "km1", "km2", "tice", "bbe")


def estimate_prior(
    x, s, method: str = "bbe", n_bootstrap: int = 0, seed: int = 0, classifier=None, progress: bool = False
) -> PriorEstimate:
    """``classifier`` (a torch network to copy) and ``progress`` (a bar over its folds) apply to ``bbe`` only."""
    if method == "bbe":
        return best_bin_prior(x, s, classifier, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    if classifier is not None:
        raise ValueError(f"a classifier is used by the 'bbe' prior estimator only, not by {method!r}")
    if method in ("e1", "e2", "e3"):
        return elkan_noto_prior(x, s, method, n_bootstrap=n_bootstrap, seed=seed)
    if method in ("km1", "km2"):
        return kernel_mean_prior(x, s, method, n_bootstrap=n_bootstrap, seed=seed)
    if method == "tice":
        return tice_prior(x, s, n_bootstrap=n_bootstrap, seed=seed)
    raise ValueError(f"prior estimator must be one of {METHODS}, got {method!r}")


__all__ = [
    "METHODS",
    "PriorEstimate",
    "best_bin_prior",
    "elkan_noto_prior",
    "estimate_prior",
    "kernel_mean_prior",
    "tice_prior",
]
