"""KM1 / KM2 (Ramaswamy, Scott & Tewari, ICML 2016): mixture proportion estimation by kernel mean embedding.

The unlabelled distribution F is a mixture ``F = (1 - kappa) G + kappa H`` of the positive distribution H (sampled
by the labelled positives) and some G; kappa* (the largest such kappa) is the unlabelled sample's class prior
under the usual irreducibility assumption. For ``lambda >= 1`` the signed measure ``lambda F + (1 - lambda) H``
is a distribution exactly while ``lambda <= lambda* = 1 / (1 - kappa*)``. In the RKHS of a Gaussian kernel,

    d(lambda) = min_{w in C} || lambda mu_F + (1 - lambda) mu_H - w ||,   C = convex hull of the sample's embeddings,

is ~0 up to lambda* and grows linearly after it; d is convex, so its slope is non-decreasing and the kink is
found by bisection on the slope: lambda_hat = inf{lambda : d'(lambda) > nu}, kappa_hat = 1 - 1 / lambda_hat.
The paper's two thresholds:

- KM1: ``nu = 1 / sqrt(min(n_F, n_H))`` (the slope that sampling noise alone cannot reach);
- KM2: ``nu = (1 - t) d'(1) + t ||mu_F - mu_H||`` with ``t = 0.2`` (relative to the curve's own slopes).

The Gaussian kernel's width is the median pairwise distance (``kernel_width="median"``, the default), or the one
of ``median x {0.1, 0.32, 1, 3.2, 10}`` that maximises ``||mu_F - mu_H||`` (``"max_mmd"``, the choice of public
re-implementations; on digits it sometimes picks 0.32 x median, where the kink of d washes out), or a number.
Each d(lambda) is a quadratic programme over the simplex, solved here as non-negative least squares
(``scipy.optimize.nnls`` on the Cholesky factor of the Gram matrix, the sum-to-one row weighted heavily).
"""

from __future__ import annotations

import numpy as np

from aipflow_weaksup.prior._common import PriorEstimate, bootstrap_interval, c_from_prior, check_pu_sample

METHODS = ("km1", "km2")
WIDTH_FACTORS = np.logspace(-1, 1, 5)


class CSDistance:
    """``d(lambda)`` for one mixture sample (first ``n_mix`` rows of the Gram matrix) and one component sample."""

    def __init__(self, gram: np.ndarray, n_mix: int) -> None:
        from scipy.linalg import cholesky

        n = gram.shape[0]
        self.gram, self.n_mix, self.n_comp = gram, n_mix, n - n_mix
        self.root = cholesky(gram + 1e-8 * np.eye(n), lower=False)  # gram = root.T @ root
        self.weight = 1e3 * np.sqrt(n)  # of the sum-to-one row: the constraint holds to ~1e-9
        self.system = np.vstack([self.root, self.weight * np.ones((1, n))])

    def embedding(self, lam: float) -> np.ndarray:
        return np.concatenate([np.full(self.n_mix, lam / self.n_mix), np.full(self.n_comp, (1 - lam) / self.n_comp)])

    def __call__(self, lam: float) -> float:
        from scipy.optimize import nnls

        u = self.embedding(lam)
        v, _ = nnls(self.system, np.concatenate([self.root @ u, [self.weight]]), maxiter=50 * len(u))
        v = v / v.sum()
        diff = u - v
        return float(np.sqrt(max(diff @ self.gram @ diff, 0.0)))

    def slope(self, lam: float, step: float) -> float:
        return (self(lam + step) - self(lam)) / step

    @property
    def mmd(self) -> float:
        """``||mu_F - mu_H||``: the slope of ``||lambda mu_F + (1 - lambda) mu_H - mu_H||`` in lambda."""
        diff = self.embedding(1.0) - self.embedding(0.0)
        return float(np.sqrt(max(diff @ self.gram @ diff, 0.0)))


def gaussian_gram(mixture: np.ndarray, component: np.ndarray, width: str | float = "median") -> np.ndarray:
    """Gaussian Gram matrix of ``[mixture; component]``; ``width``: ``"median"``, ``"max_mmd"`` or a number."""
    from scipy.spatial.distance import cdist

    points = np.vstack([mixture, component])
    sq = cdist(points, points, "sqeuclidean")
    if isinstance(width, (int, float)) and not isinstance(width, bool):
        if width <= 0:
            raise ValueError(f"kernel_width must be positive, got {width}")
        return np.exp(-sq / (2.0 * float(width) ** 2))
    if width not in ("median", "max_mmd"):
        raise ValueError(f"kernel_width must be 'median', 'max_mmd' or a positive number, got {width!r}")
    median = np.sqrt(np.median(sq))
    if width == "median":
        return np.exp(-sq / (2.0 * median**2))
    n_mix = len(mixture)
    sign = np.concatenate([np.full(n_mix, 1.0 / n_mix), np.full(len(component), -1.0 / len(component))])
    best, best_gram = -1.0, None
    for factor in WIDTH_FACTORS:
        gram = np.exp(-sq / (2.0 * (factor * median) ** 2))
        mmd = float(sign @ gram @ sign)
        if mmd > best:
            best, best_gram = mmd, gram
    return best_gram


def kernel_mean_kappa(
    mixture: np.ndarray,
    component: np.ndarray,
    method: str = "km2",
    kernel_width: str | float = "median",
    lambda_max: float = 8.0,
    tolerance: float = 0.04,
) -> float:
    """kappa*: the proportion of the component's distribution in the mixture's."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    distance = CSDistance(gaussian_gram(mixture, component, kernel_width), len(mixture))
    if method == "km1":
        nu = 1.0 / np.sqrt(min(len(mixture), len(component)))
    else:
        threshold = 0.2
        nu = (1 - threshold) * distance.slope(1.0, 0.05) + threshold * distance.mmd
    lo, hi = 1.0, lambda_max
    while hi - lo > tolerance:  # d is convex in lambda: its slope crosses nu once
        mid = (lo + hi) / 2
        if distance.slope(mid, tolerance / 2) > nu:
            hi = mid
        else:
            lo = mid
    lam = (lo + hi) / 2
    return float(1.0 - 1.0 / lam)


def kernel_mean_prior(
    x,
    s,
    method: str = "km2",
    kernel_width: str | float = "median",
    max_points: int = 2000,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> PriorEstimate:
    """The class prior of the unlabelled rows of ``(x, s)`` (``s`` 1 = labelled positive, 0 = unlabelled).

    ``max_points`` caps the unlabelled rows used (a random subset; the QP is cubic in the sample size)."""
    x, s = check_pu_sample(x, s)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rng = np.random.default_rng(seed)

    def estimate(xb: np.ndarray, sb: np.ndarray, r: np.random.Generator) -> float:
        mixture, component = xb[sb == 0], xb[sb == 1]
        if len(mixture) > max_points:
            mixture = mixture[r.choice(len(mixture), max_points, replace=False)]
        return float(np.clip(kernel_mean_kappa(mixture, component, method, kernel_width), 1e-6, 1 - 1e-6))

    prior = estimate(x, s, rng)
    result = PriorEstimate(prior, c_from_prior(prior, s), method)
    if n_bootstrap:
        result.interval = bootstrap_interval(estimate, x, s, n_bootstrap, rng)
    return result
