"""Class-prior estimators against known mixtures, an independent QP solver and the bounds' own formulas."""

import numpy as np
import pytest
from aipflow_weaksup.prior import METHODS, elkan_noto_prior, estimate_prior, kernel_mean_prior, tice_prior
from aipflow_weaksup.prior.kernel_mean import CSDistance, gaussian_gram, kernel_mean_kappa
from aipflow_weaksup.prior.tice import binned_features, lower_bound, pick_delta


def gaussian_pu(n=4000, prior=0.4, c=0.3, shift=2.0, seed=0):
    """Two Gaussians in 2-D, SCAR labels; returns x, s and the unlabelled rows' true prior."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prior
    x = np.where(y[:, None], rng.normal(shift, 1.0, (n, 2)), rng.normal(-shift, 1.0, (n, 2)))
    s = (y & (rng.random(n) < c)).astype(int)
    return x, s, float(y[s == 0].mean())


@pytest.mark.parametrize("method", ["e1", "e2", "e3"])
def test_elkan_noto_prior_on_synthetic_scar_data(method):
    x, s, truth = gaussian_pu()
    est = elkan_noto_prior(x, s, method, n_bootstrap=20 if method == "e1" else 0)
    if method == "e3":  # the max of g over-estimates c, so the prior comes out low (the paper's weakest)
        assert 0.0 < est.prior < truth
    else:
        assert abs(est.prior - truth) < 0.05
    if method == "e1":
        lo, hi = est.interval
        assert lo <= est.prior <= hi and hi - lo < 0.2


def test_cs_distance_matches_an_independent_simplex_qp():
    """d(lambda) from the NNLS formulation equals SLSQP's minimum of (u - v)' K (u - v) over the simplex."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    mixture, component = rng.normal(0, 1, (14, 2)), rng.normal(1.5, 1, (6, 2))
    gram = gaussian_gram(mixture, component)
    distance = CSDistance(gram, len(mixture))
    for lam in (1.0, 1.5, 3.0):
        u = distance.embedding(lam)
        res = minimize(
            lambda v, u=u: (u - v) @ gram @ (u - v),
            np.full(20, 1 / 20),
            jac=lambda v, u=u: -2 * gram @ (u - v),
            bounds=[(0, None)] * 20,
            constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert distance(lam) == pytest.approx(np.sqrt(max(res.fun, 0.0)), abs=1e-5)
    assert distance(1.0) == pytest.approx(0.0, abs=1e-6)  # lambda = 1 is the mixture itself, inside the hull
    diff = np.r_[np.full(14, 1 / 14), np.full(6, -1 / 6)]
    assert distance.mmd == pytest.approx(np.sqrt(diff @ gram @ diff))


@pytest.mark.parametrize("method", ["km1", "km2"])
def test_kernel_mean_recovers_the_mixture_proportion(method):
    """Separated 1-D components: kappa* is the component's weight in the mixture."""
    rng = np.random.default_rng(0)
    for kappa in (0.3, 0.6):
        n_mix, n_comp = 800, 300
        from_h = rng.random(n_mix) < kappa
        mixture = np.where(from_h, rng.normal(0, 1, n_mix), rng.normal(5, 1, n_mix))[:, None]
        component = rng.normal(0, 1, n_comp)[:, None]
        assert kernel_mean_kappa(mixture, component, method) == pytest.approx(from_h.mean(), abs=0.06)


def test_kernel_mean_prior_with_interval_and_bad_input():
    x, s, truth = gaussian_pu(n=1200, shift=2.5)
    est = kernel_mean_prior(x, s, "km2", n_bootstrap=5)
    assert abs(est.prior - truth) < 0.06
    lo, hi = est.interval
    assert lo <= hi and hi - lo < 0.3
    assert est.c == pytest.approx(s.sum() / (s.sum() + est.prior * (s == 0).sum()))  # the c this prior implies
    with pytest.raises(ValueError, match="kernel_width must be"):
        kernel_mean_prior(x, s, kernel_width="widest")
    with pytest.raises(ValueError, match="method must be one of"):
        kernel_mean_prior(x, s, method="km3")


def test_tice_bound_formula_and_binning():
    # Cantelli: L/T - sqrt(c (1 - c) (1 - delta) / (delta T)), by hand
    assert lower_bound(100, 30, 0.2, 0.5) == pytest.approx(0.3 - np.sqrt(0.25 * 0.8 / 20))
    assert pick_delta(100) == pytest.approx(1 / 1.4) and pick_delta(10**6) == 0.025
    bins = binned_features(np.array([[0.0], [0.2], [0.3], [0.6], [1.0]]))
    assert bins.argmax(2)[:, 0].tolist() == [0, 0, 1, 2, 3] and bins.sum(2).max() == 1


def test_tice_finds_the_pure_positive_region():
    """Binary features: positives have feature 0 set 70 % of the time, negatives never, so the subset
    {feature 0 = 1} is all positives and its labelled fraction is c; TIcE's lower bound gets close from below."""
    rng = np.random.default_rng(0)
    n, c = 6000, 0.4
    y = rng.random(n) < 0.5
    x = rng.random((n, 5)) < 0.5
    x[:, 0] = y & (rng.random(n) < 0.7)
    s = (y & (rng.random(n) < c)).astype(int)
    est = tice_prior(x.astype(float), s, n_bootstrap=3)
    assert 0.3 < est.c <= c + 0.03  # a lower bound, tight on the pure subset
    truth = float(y[s == 0].mean())
    assert abs(est.prior - truth) < 0.08
    assert est.interval[0] <= est.interval[1]


def test_estimate_prior_dispatch_and_errors():
    x, s, _ = gaussian_pu(n=600)
    assert set(METHODS) == {"e1", "e2", "e3", "km1", "km2", "tice"}
    assert estimate_prior(x, s, "e1").method == "e1"
    with pytest.raises(ValueError, match="prior estimator must be one of"):
        estimate_prior(x, s, "em")
    with pytest.raises(ValueError, match="the positive set is empty"):
        estimate_prior(np.zeros((10, 2)), np.zeros(10), "km2")
    with pytest.raises(ValueError, match="the unlabelled set is empty"):
        estimate_prior(np.zeros((10, 2)), np.ones(10), "tice")
    with pytest.raises(ValueError, match="0 \\(unlabelled\\) or 1"):
        estimate_prior(np.zeros((3, 2)), np.array([0, 1, 2]), "e1")
