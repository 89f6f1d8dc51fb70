"""Class-prior (mixture-proportion) estimation from positive and unlabelled data: one registry, one call.

``estimate_prior(x, s, method)`` returns the class prior of the unlabelled rows of ``(x, s)`` (``s`` 1 =
labelled positive, 0 = unlabelled; the labelled positives a uniform sample of all positives, SCAR), with a 95 %
bootstrap interval when ``n_bootstrap`` > 0:

- ``e1`` / ``e2`` / ``e3``: Elkan & Noto (KDD 2008), from a labelled-vs-unlabelled classifier;
- ``km1`` / ``km2``: Ramaswamy, Scott & Tewari (ICML 2016), kernel mean embedding;
- ``tice``: Bekker & Davis (AAAI 2018), tree induction for the label frequency.
"""

from __future__ import annotations

from aipflow_weaksup.prior._common import PriorEstimate
from aipflow_weaksup.prior.elkan_noto import elkan_noto_prior
from aipflow_weaksup.prior.kernel_mean import kernel_mean_prior
from aipflow_weaksup.prior.tice import tice_prior

METHODS = ("e1", "e2", "e3", "km1", "km2", "tice")


def estimate_prior(x, s, method: str = "km2", n_bootstrap: int = 0, seed: int = 0) -> PriorEstimate:
    if method in ("e1", "e2", "e3"):
        return elkan_noto_prior(x, s, method, n_bootstrap=n_bootstrap, seed=seed)
    if method in ("km1", "km2"):
        return kernel_mean_prior(x, s, method, n_bootstrap=n_bootstrap, seed=seed)
    if method == "tice":
        return tice_prior(x, s, n_bootstrap=n_bootstrap, seed=seed)
    raise ValueError(f"prior estimator must be one of {METHODS}, got {method!r}")


__all__ = ["METHODS", "PriorEstimate", "elkan_noto_prior", "estimate_prior", "kernel_mean_prior", "tice_prior"]
