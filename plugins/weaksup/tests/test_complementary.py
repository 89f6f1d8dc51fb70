"""Complementary-label losses against numpy re-derivations and finite differences."""

import numpy as np
import pytest
import torch
from aipflow_weaksup.risks.complementary import ComplementaryLoss, complementary_loss


def data(seed=0, n=9, k=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_unbiased(z, c):
    n, k = z.shape
    ell = -np.log(softmax(z))
    return np.array([ell[:, j].mean() - (k - 1) / n * ell[c == j, j].sum() for j in range(k)])


def test_formulas():
    logits, comp = data()
    z, c = logits.numpy(), comp.numpy()
    p = softmax(z)
    pc = p[np.arange(len(c)), c]
    k = z.shape[1]
    assert complementary_loss(logits, comp, "scl_nl")[0].item() == pytest.approx(np.mean(-np.log(1 - pc)))
    assert complementary_loss(logits, comp, "scl_exp")[0].item() == pytest.approx(np.mean(np.exp(pc)))
    gc = z[np.arange(len(c)), c][:, None]
    pc_expected = np.mean(
        [sum(1 / (1 + np.exp(z[i, j] - gc[i, 0])) for j in range(k) if j != c[i]) for i in range(len(c))]
    )
    assert complementary_loss(logits, comp, "pc")[0].item() == pytest.approx(pc_expected)
    assert complementary_loss(logits, comp, "forward")[0].item() == pytest.approx(np.mean(-np.log((1 - pc) / (k - 1))))
    a = np_unbiased(z, c)
    assert complementary_loss(logits, comp, "unbiased", "free")[1].item() == pytest.approx(a.sum())
    assert complementary_loss(logits, comp, "unbiased", "max")[0].item() == pytest.approx(np.maximum(a, 0).sum())
    objective, risk = complementary_loss(logits, comp, "unbiased", "ga")
    if (a < 0).any():
        assert objective.item() == pytest.approx(-a[a < 0].sum())


def test_unbiased_estimator_is_unbiased_for_the_ordinary_risk():
    # uniform complementary labels drawn from true labels: the free estimator's mean equals the CE risk
    rng = np.random.default_rng(0)
    n, k = 20000, 4
    logits = torch.tensor(rng.normal(size=(n, k)))
    y = torch.tensor(rng.integers(0, k, n))
    comp = (y + torch.tensor(rng.integers(1, k, n))) % k
    ce = torch.nn.functional.cross_entropy(logits, y).item()
    assert complementary_loss(logits, comp, "unbiased", "free")[1].item() == pytest.approx(ce, rel=0.03)


@pytest.mark.parametrize(
    "kind, correction",
    [
        ("scl_nl", "free"),
        ("scl_exp", "free"),
        ("pc", "free"),
        ("forward", "free"),
        ("unbiased", "free"),
        ("unbiased", "max"),
    ],
)
def test_gradients(kind, correction):
    logits, comp = data(seed=2)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: complementary_loss(z, comp, kind, correction)[0], (logits,))


def test_bad_input():
    logits, comp = data()
    with pytest.raises(ValueError, match=r"complementary labels must lie in \[0, 3\]"):
        complementary_loss(logits, comp + 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        complementary_loss(logits[:, :1], torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="kind must be one of"):
        ComplementaryLoss(kind="nl")
