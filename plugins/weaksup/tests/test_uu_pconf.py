"""UU / nnUU and Pconf: numpy re-derivations, reductions to the PN and uPU risks, finite differences."""

import numpy as np
import pytest
import torch
from aipflow_weaksup.risks.pu import pn_risk, pu_risk
from aipflow_weaksup.risks.uu import pconf_risk, uu_risk


def scores(seed, n):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def sig(z, t):
    return 1 / (1 + np.exp(t * z))


def test_uu_matches_numpy():
    u, u2 = scores(0, 9), scores(1, 7)
    th, th2, pi = 0.8, 0.3, 0.5
    gap = th - th2
    a, b, c, d = (1 - th2) * pi / gap, th2 * (1 - pi) / gap, (1 - th) * pi / gap, th * (1 - pi) / gap
    zu, zu2 = u.numpy(), u2.numpy()
    pos = a * sig(zu, 1).mean() - c * sig(zu2, 1).mean()
    neg = d * sig(zu2, -1).mean() - b * sig(zu, -1).mean()
    assert uu_risk(u, u2, th, th2, pi).risk.item() == pytest.approx(pos + neg)
    assert uu_risk(u, u2, th, th2, pi, correction="relu").risk.item() == pytest.approx(max(pos, 0) + max(neg, 0))
    assert uu_risk(u, u2, th, th2, pi, correction="abs").risk.item() == pytest.approx(abs(pos) + abs(neg))


def test_uu_reduces_to_pn_and_upu():
    p, n = scores(2, 8), scores(3, 6)
    pi = 0.4
    labels = torch.cat([torch.ones(8), -torch.ones(6)]).long()
    both = torch.cat([p, n])
    assert uu_risk(p, n, 1.0, 0.0, pi).risk.item() == pytest.approx(pn_risk(both, labels, pi).risk.item())
    u = scores(4, 10)
    s = torch.cat([torch.ones(8), torch.zeros(10)]).long()
    upu = pu_risk(torch.cat([p, u]), s, pi, estimator="upu").risk.item()
    assert uu_risk(p, u, 1.0, pi, pi).risk.item() == pytest.approx(upu)


def test_pconf_matches_numpy_and_gradients():
    z = scores(5, 10)
    r = torch.linspace(0.2, 1.0, 10, dtype=torch.float64)
    pi = 0.6
    expected = pi * np.mean(sig(z.numpy(), 1) + (1 - r.numpy()) / r.numpy() * sig(z.numpy(), -1))
    assert pconf_risk(z, r, pi).risk.item() == pytest.approx(expected)
    zz = z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pconf_risk(x, r, pi).objective, (zz,))
    uu = scores(6, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: uu_risk(x, scores(7, 4), 0.9, 0.2, 0.5, correction="abs").objective, (uu,)
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: uu_risk(scores(0, 3), scores(1, 3), 0.3, 0.3, 0.5), "two different class priors"),
        (lambda: uu_risk(scores(0, 3), scores(1, 0), 0.8, 0.3, 0.5), "non-empty"),
        (lambda: uu_risk(scores(0, 3), scores(1, 3), 0.8, 0.3, 1.5), r"must lie in \(0, 1\)"),
        (lambda: pconf_risk(scores(0, 3), torch.zeros(3, dtype=torch.float64), 0.5), r"must lie in \(0, 1\]"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("correction", ["relu", "abs"])
def test_nnuu_corrections_act_on_a_negative_partial_risk(correction):
    # u scored far positive, u2 near 0: the positive part a E_U l(+1) - c E_U' l(+1) ~ -c / 2 < 0, the negative
    # part d E_U' l(-1) - b E_U l(-1) ~ d / 2 - b > 0
    th, th2, pi = 0.8, 0.3, 0.5
    gap = th - th2
    a, b, c, d = (1 - th2) * pi / gap, th2 * (1 - pi) / gap, (1 - th) * pi / gap, th * (1 - pi) / gap
    u = torch.tensor([6.0, 7.0, 5.5], dtype=torch.float64, requires_grad=True)
    u2 = torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=torch.float64)
    zu, zu2 = u.detach().numpy(), u2.numpy()
    pos = a * sig(zu, 1).mean() - c * sig(zu2, 1).mean()
    neg = d * sig(zu2, -1).mean() - b * sig(zu, -1).mean()
    assert pos < 0 < neg  # the case the correction exists for
    want = (max(pos, 0) if correction == "relu" else abs(pos)) + neg
    out = uu_risk(u, u2, th, th2, pi, correction=correction)
    assert out.risk.item() == pytest.approx(want) and out.risk.item() != pytest.approx(pos + neg)
    assert torch.autograd.gradcheck(lambda x: uu_risk(x, u2, th, th2, pi, correction=correction).objective, (u,))
