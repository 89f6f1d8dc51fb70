"""PU risk estimators against a numpy re-derivation from the papers' equations, finite differences, golden
values; and the plugin seen through aipflow's contract."""

import numpy as np
import pytest
import torch
from aipflow_weaksup.risks import PURisk, pn_risk, pnu_risk, pu_risk


def np_loss(name, z, t):
    if name == "sigmoid":
        return 1 / (1 + np.exp(t * z))
    if name == "logistic":
        return np.log1p(np.exp(-t * z))
    return (t * z - 1) ** 2 / 4


def batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0][:n])
    return scores, labels


@pytest.mark.parametrize("loss", ["sigmoid", "logistic", "squared"])
@pytest.mark.parametrize("estimator", ["upu", "nnpu", "abspu"])
def test_matches_numpy(loss, estimator):
    scores, labels = batch()
    z, s = scores.numpy(), labels.numpy()
    pi = 0.4
    rp_plus = np_loss(loss, z[s == 1], +1).mean()
    rp_minus = np_loss(loss, z[s == 1], -1).mean()
    ru_minus = np_loss(loss, z[s == 0], -1).mean()
    neg = ru_minus - pi * rp_minus
    expected = {"upu": pi * rp_plus + neg, "nnpu": pi * rp_plus + max(0.0, neg), "abspu": pi * rp_plus + abs(neg)}
    out = pu_risk(scores, labels, pi, loss, estimator)
    assert out.risk.item() == pytest.approx(expected[estimator], abs=1e-12)


def test_golden_values():
    scores = torch.tensor([2.0, -1.0, 0.5, 1.5, -0.5, 0.0], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1, 0, 0])
    # by hand, sigmoid loss l(z, t) = s(-t z), pi = 0.5, s the logistic sigmoid:
    # R_P^+ = mean(s(-2), s(-1.5)) = 0.150815, R_P^- = mean(s(2), s(1.5)) = 0.849185,
    # R_U^- = mean(s(-1), s(0.5), s(-0.5), s(0)) = 0.442235
    out = pu_risk(scores, labels, 0.5, "sigmoid", "upu")
    assert out.risk.item() == pytest.approx(0.5 * 0.150815 + 0.442235 - 0.5 * 0.849185, abs=1e-5)


def test_nnpu_conventions_when_the_negative_part_goes_below_zero():
    # positives scored very negative and unlabelled very negative: R_U^- small, pi R_P^- large -> negative < 0
    scores = torch.tensor([-3.0, -2.5, -4.0, -5.0, -4.5, -6.0], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 1, 0, 0, 0, 0])
    pi = 0.6
    results = {
        c: pu_risk(scores, labels, pi, "sigmoid", "nnpu", convention=c, gamma=0.5) for c in ("paper", "max", "whole")
    }
    neg = results["paper"].negative
    assert neg.item() < 0
    assert results["paper"].objective.item() == pytest.approx(-0.5 * neg.item())
    assert results["max"].objective.item() == pytest.approx(results["max"].positive.item())
    assert results["whole"].objective.item() == pytest.approx(-0.5 * (results["whole"].positive + neg).item())
    for r in results.values():  # the reported risk is the non-negative one whatever is optimised
        assert r.risk.item() == pytest.approx(r.positive.item())
    (grad_paper,) = torch.autograd.grad(results["paper"].objective, scores)
    (grad_neg,) = torch.autograd.grad(pu_risk(scores, labels, pi, "sigmoid", "upu").negative, scores)
    assert torch.allclose(grad_paper, -0.5 * grad_neg)  # gradient ascent on the negative part only


@pytest.mark.parametrize("loss", ["sigmoid", "logistic", "squared"])
@pytest.mark.parametrize("estimator", ["upu", "nnpu", "abspu"])
def test_gradients_match_finite_differences(loss, estimator):
    scores, labels = batch(seed=3)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: pu_risk(z, labels, 0.3, loss, estimator).objective, (scores,))


def test_pn_and_pnu():
    scores, _ = batch()
    labels = torch.tensor([1, -1, 0, 1, -1, 0, 0, 1, -1, 0, 0, 0])
    z, y = scores.numpy(), labels.numpy()
    pi = 0.3
    pn = pi * np_loss("sigmoid", z[y == 1], 1).mean() + (1 - pi) * np_loss("sigmoid", z[y == -1], -1).mean()
    assert pn_risk(scores[labels != 0], labels[labels != 0], pi).risk.item() == pytest.approx(pn)
    pu = (
        pi * np_loss("sigmoid", z[y == 1], 1).mean()
        + np_loss("sigmoid", z[y == 0], -1).mean()
        - pi * np_loss("sigmoid", z[y == 1], -1).mean()
    )
    nu = (
        (1 - pi) * np_loss("sigmoid", z[y == -1], -1).mean()
        + np_loss("sigmoid", z[y == 0], 1).mean()
        - (1 - pi) * np_loss("sigmoid", z[y == -1], 1).mean()
    )
    assert pnu_risk(scores, labels, pi, 0.3).risk.item() == pytest.approx(0.7 * pn + 0.3 * pu)
    assert pnu_risk(scores, labels, pi, -0.4).risk.item() == pytest.approx(0.6 * pn + 0.4 * nu)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda z, s: pu_risk(z, s, 1.0), r"prior \(class prior pi\) must lie in \(0, 1\), got 1.0"),
        (lambda z, s: pu_risk(z, s, 0.0), r"must lie in \(0, 1\), got 0.0"),
        (lambda z, s: pu_risk(z, torch.zeros_like(s), 0.3), "the batch has no labelled positives"),
        (lambda z, s: pu_risk(z, torch.ones_like(s), 0.3), "the batch has no unlabelled samples"),
        (lambda z, s: pu_risk(z, s, 0.3, estimator="bpu"), "estimator must be one of"),
        (lambda z, s: pu_risk(z, s, 0.3, loss="hinge2"), "loss must be one of"),
        (lambda z, s: pu_risk(z, s, 0.3, convention="other"), "convention must be one of"),
        (lambda z, s: pnu_risk(z, s, 0.3, eta=2.0), r"eta must lie in \[-1, 1\]"),
        (lambda z, s: PURisk(prior=-0.2), r"must lie in \(0, 1\)"),
    ],
)
def test_bad_input(call, match):
    scores, labels = batch()
    with pytest.raises(ValueError, match=match):
        call(scores, labels)


def test_plugin_is_discovered_and_its_components_resolve():
    from aipflow.config import rewrite_short_names
    from aipflow.plugins import discover, get_registry, reset_registry

    reset_registry()
    records = {r.name: r for r in discover()}
    assert records["weaksup"].status == "ok" and records["weaksup"].distribution == "aipflow-weaksup"
    assert get_registry().get("PURisk").source == "weaksup"
    out = rewrite_short_names({"loss": {"class_path": "PURisk", "init_args": {"prior": 0.5}}})
    assert out["loss"]["class_path"] == "aipflow_weaksup.risks.pu.PURisk"
