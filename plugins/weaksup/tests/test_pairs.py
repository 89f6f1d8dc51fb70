"""SU and SD: unbiased for the PN risk (Monte-Carlo simulation with known class-conditionals), gradients."""

import numpy as np
import pytest
import torch
from aipflow_weaksup.risks.pairs import pcomp_risk, sd_risk, su_risk
from aipflow_weaksup.risks.pu import pn_risk


def simulate(prior=0.7, n=200_000, seed=0):
    rng = np.random.default_rng(seed)

    def draw(cls, size):
        return rng.normal(1.0 if cls > 0 else -1.0, 1.0, size)

    g = lambda x: torch.tensor(0.8 * x - 0.3)  # a fixed classifier  # noqa: E731
    # similar pairs: both +1 with probability prior^2 / pi_S, else both -1; pooled pointwise
    ps = prior**2 + (1 - prior) ** 2
    both_pos = rng.random(n) < prior**2 / ps
    similar = np.concatenate([np.where(both_pos, draw(1, n), draw(-1, n)), np.where(both_pos, draw(1, n), draw(-1, n))])
    # dissimilar pairs: one of each class
    dissimilar = np.concatenate([draw(1, n), draw(-1, n)])
    unlabeled = np.where(rng.random(n) < prior, draw(1, n), draw(-1, n))
    return g, similar, dissimilar, unlabeled


@pytest.mark.parametrize("loss", ["sigmoid", "logistic"])
def test_su_and_sd_are_unbiased_for_the_pn_risk(loss):
    g, similar, dissimilar, unlabeled = simulate()
    rng = np.random.default_rng(1)
    y = np.where(rng.random(200_000) < 0.7, 1, -1)
    x = np.where(y > 0, rng.normal(1, 1, len(y)), rng.normal(-1, 1, len(y)))
    pn = pn_risk(g(x), torch.tensor(y), 0.7, loss).risk.item()
    assert su_risk(g(similar), g(unlabeled), 0.7, loss).risk.item() == pytest.approx(pn, abs=0.01)
    assert sd_risk(g(similar), g(dissimilar), 0.7, loss).risk.item() == pytest.approx(pn, abs=0.01)


def test_gradients_and_bad_input():
    z1 = torch.randn(6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: su_risk(a, z2, 0.3).objective, (z1,))
    assert torch.autograd.gradcheck(lambda a: sd_risk(a, z2, 0.3, "squared").objective, (z1,))
    with pytest.raises(ValueError, match="different from 0.5"):
        su_risk(z1, z2, 0.5)
    with pytest.raises(ValueError, match="needs similar pairs and unlabelled points"):
        su_risk(z1[:0], z2, 0.3)


@pytest.mark.parametrize("correction", ["none", "relu", "abs"])
def test_pcomp_is_unbiased_for_the_pn_risk(correction):
    rng = np.random.default_rng(2)
    prior, n = 0.6, 300_000
    g = lambda x: torch.tensor(0.8 * x - 0.3)  # noqa: E731
    y = np.where(rng.random(n) < prior, 1, -1)
    x = np.where(y > 0, rng.normal(1, 1, n), rng.normal(-1, 1, n))
    pn = pn_risk(g(x), torch.tensor(y), prior).risk.item()
    # pairs of independent draws, the (negative, positive) ones removed: what Pcomp data is
    y1, y2 = np.where(rng.random(n) < prior, 1, -1), np.where(rng.random(n) < prior, 1, -1)
    keep = ~((y1 < 0) & (y2 > 0))
    x1 = np.where(y1 > 0, rng.normal(1, 1, n), rng.normal(-1, 1, n))[keep]
    x2 = np.where(y2 > 0, rng.normal(1, 1, n), rng.normal(-1, 1, n))[keep]
    out = pcomp_risk(g(x1), g(x2), prior, correction=correction)
    assert out.risk.item() == pytest.approx(pn, abs=0.01)  # both parts are positive here: corrections agree
    assert out.positive.item() > 0 and out.negative.item() > 0


def np_sigmoid_loss(z, t):
    return 1 / (1 + np.exp(t * z))


@pytest.mark.parametrize("correction", ["relu", "abs"])
def test_pcomp_corrections_act_on_a_negative_partial_risk(correction):
    # with A = l(x, +1) ~ 0.1 and B = l(x', +1) ~ 0.43 (sigmoid loss, l(z, -1) = 1 - l(z, +1)): the positive part
    # A - pi_N B ~ -0.07 < 0 and the negative part (1 - B) - pi_P (1 - A) ~ +0.03 > 0
    prior = 0.6
    first = torch.tensor([2.1, 2.2, 2.3], dtype=torch.float64, requires_grad=True)
    second = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    x, x2 = first.detach().numpy(), second.numpy()
    pos = np_sigmoid_loss(x, 1).mean() - (1 - prior) * np_sigmoid_loss(x2, 1).mean()
    neg = np_sigmoid_loss(x2, -1).mean() - prior * np_sigmoid_loss(x, -1).mean()
    assert pos < 0 < neg
    want = (max(pos, 0) if correction == "relu" else abs(pos)) + neg
    out = pcomp_risk(first, second, prior, correction=correction)
    assert out.risk.item() == pytest.approx(want) and out.risk.item() != pytest.approx(pos + neg)
    assert torch.autograd.gradcheck(lambda f: pcomp_risk(f, second, prior, correction=correction).objective, (first,))
