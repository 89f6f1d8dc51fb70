"""Class-prior estimators against known mixtures, an independent QP solver and the bounds' own formulas."""

import numpy as np
import pytest
from aipflow_weaksup.prior import (
    METHODS,
    best_bin_prior,
    elkan_noto_prior,
    estimate_prior,
    kernel_mean_prior,
    tice_prior,
)
from aipflow_weaksup.prior._scores import out_of_fold_scores
from aipflow_weaksup.prior.best_bin import best_bin_kappa
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
    assert set(METHODS) == {"e1", "e2", "e3", "km1", "km2", "tice", "bbe"}
    assert estimate_prior(x, s, "e1").method == "e1"
    with pytest.raises(ValueError, match="prior estimator must be one of"):
        estimate_prior(x, s, "em")
    with pytest.raises(ValueError, match="the positive set is empty"):
        estimate_prior(np.zeros((10, 2)), np.zeros(10), "km2")
    with pytest.raises(ValueError, match="the unlabelled set is empty"):
        estimate_prior(np.zeros((10, 2)), np.ones(10), "tice")
    with pytest.raises(ValueError, match="0 \\(unlabelled\\) or 1"):
        estimate_prior(np.zeros((3, 2)), np.array([0, 1, 2]), "e1")
    with pytest.raises(ValueError, match="used by the 'bbe' prior estimator only, not by 'km2'"):
        estimate_prior(x, s, "km2", classifier=object())


def best_bin_by_hand(p, u, delta=0.1, gamma=0.01):
    """BBE's threshold rule evaluated directly: every candidate threshold, counts by comparison."""
    eps = np.sqrt(np.log(4 / delta) / (2 * len(p))) + np.sqrt(np.log(4 / delta) / (2 * len(u)))
    best, ratio = np.inf, None
    for t in sorted(set(p) | set(u)):
        q_p = sum(z >= t for z in p) / len(p)
        q_u = sum(z >= t for z in u) / len(u)
        if q_p > 0 and q_u / q_p + (1 + gamma) * eps / q_p < best:
            best, ratio = q_u / q_p + (1 + gamma) * eps / q_p, q_u / q_p
    return ratio


def test_best_bin_kappa_matches_the_rule_evaluated_by_hand():
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = rng.integers(0, 12, 40).astype(float)  # ties on purpose
        u = rng.integers(-5, 12, 90).astype(float)
        assert best_bin_kappa(p, u) == pytest.approx(best_bin_by_hand(p, u), abs=1e-12)
        assert best_bin_kappa(p, u, delta=0.3, gamma=0.5) == pytest.approx(best_bin_by_hand(p, u, 0.3, 0.5))
    # q_P = 1 for every threshold up to 3 (equal slack there) and the ratio is lowest at 3: (2/6) / 1; at 4 the
    # ratio is the same but q_P = 1/2 doubles the slack
    assert best_bin_kappa([3.0, 4.0], [0.0, 0.0, 1.0, 1.0, 3.0, 4.0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="delta in \\(0, 1\\)"):
        best_bin_kappa([1.0], [0.0], delta=1.5)


def test_best_bin_recovers_the_proportion_when_the_top_bin_is_pure():
    """Positive scores on [0.5, 1.5], negative on [0, 1]: above 1 only positives, where q_U = kappa q_P."""
    rng = np.random.default_rng(0)
    for kappa in (0.2, 0.5):
        from_p = rng.random(40000) < kappa
        u = np.where(from_p, rng.uniform(0.5, 1.5, 40000), rng.uniform(0.0, 1.0, 40000))
        p = rng.uniform(0.5, 1.5, 20000)
        assert best_bin_kappa(p, u) == pytest.approx(from_p.mean(), abs=0.02)


def test_out_of_fold_scores_never_see_their_own_row():
    """Pure-noise features, 120 dimensions for 150 rows: a fitted logistic regression separates its own rows
    perfectly, so only scores from models that never saw the row rank at chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x, s = rng.normal(size=(150, 120)), (rng.random(150) < 0.4).astype(int)
    in_sample = LogisticRegression(max_iter=2000).fit(x, s).decision_function(x)
    assert roc_auc_score(s, in_sample) > 0.99
    assert roc_auc_score(s, out_of_fold_scores(x, s, folds=5)) < 0.7
    with pytest.raises(ValueError, match="folds must be >= 2"):
        out_of_fold_scores(x, s, folds=1)
    with pytest.raises(ValueError, match="at least 5 labelled"):
        out_of_fold_scores(x[:8], np.r_[np.ones(3), np.zeros(5)].astype(int))


def test_best_bin_prior_with_logistic_regression_and_with_a_network():
    import torch

    x, s, truth = gaussian_pu(n=2000, shift=2.0)
    est = best_bin_prior(x, s, n_bootstrap=20)
    assert est.method == "bbe" and abs(est.prior - truth) < 0.05
    lo, hi = est.interval
    assert lo <= hi and hi - lo < 0.2
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    before = [w.detach().clone() for w in net.parameters()]
    state = torch.get_rng_state()
    est = estimate_prior(x.astype(np.float32), s, "bbe", classifier=net)
    assert abs(est.prior - truth) < 0.05
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # copies are trained
    assert torch.equal(state, torch.get_rng_state())  # and the caller's random stream is left alone
