"""Complementary-label losses against numpy re-derivations and finite differences."""

import numpy as np
import pytest
import torch
from aipflow_weaksup.risks.complementary import ComplementaryLoss, complementary_loss

from aipflow.testing import quiet_trainer


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


def test_gradient_ascent_acts_exactly_when_a_partial_risk_is_negative():
    # built so that A_0 < 0 for sure: every complementary label is 0 and class 0 is far less likely than the rest,
    # A_0 = mean l_0 - (K - 1) / n * sum_{c_i = 0} l_0 = (1 - (K - 1)) mean l_0 < 0, while A_1, A_2 > 0
    k = 3
    logits = torch.tensor([[-4.0, 1.0, 0.5], [-3.0, 0.2, 0.9], [-5.0, 0.4, 0.1], [-4.5, 1.2, 0.3]], dtype=torch.float64)
    comp = torch.zeros(4, dtype=torch.long)
    a = np_unbiased(logits.numpy(), comp.numpy())
    assert a[0] < 0 and (a[1:] > 0).all()
    leaf = logits.clone().requires_grad_(True)
    objective, risk = complementary_loss(leaf, comp, "unbiased", "ga")
    assert objective.item() == pytest.approx(-a[0])  # ascent on the negative part only
    assert risk.item() == pytest.approx(np.maximum(a, 0).sum())
    objective.backward()
    # the objective is -A_0: its gradient is minus A_0's, found independently by finite differences
    eps, numeric = 1e-6, torch.zeros_like(logits)
    for i in range(4):
        for j in range(k):
            up, down = logits.clone(), logits.clone()
            up[i, j] += eps
            down[i, j] -= eps
            numeric[i, j] = -(np_unbiased(up.numpy(), comp.numpy())[0] - np_unbiased(down.numpy(), comp.numpy())[0])
    assert torch.allclose(leaf.grad, numeric / (2 * eps), atol=1e-6)
    # with every A_k positive (balanced labels, flat logits) it is the plain risk
    flat, balanced = torch.zeros(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    a = np_unbiased(flat.numpy(), balanced.numpy())
    assert (a > 0).all()
    objective, risk = complementary_loss(flat, balanced, "unbiased", "ga")
    assert objective.item() == pytest.approx(a.sum()) == risk.item()


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


# ------------------------------------------------------------------------ multiple complementary labels (Feng 2020)
def multi_data(seed=0, n=12, k=5):
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, k))
    mask = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        d = g.integers(1, k)  # 1 .. K - 1
        mask[i, g.choice(k, d, replace=False)] = 1
    return torch.tensor(z), torch.tensor(mask), z, mask


def test_multiple_formulas_against_numpy():
    logits, mask_t, z, mask = multi_data()
    n, k = z.shape
    p = softmax(z)
    ell = -np.log(p)
    d = mask.sum(1)
    unbiased = np.mean(
        [ell[i, mask[i] == 0].sum() - (k - 1 - d[i]) / d[i] * ell[i, mask[i] == 1].sum() for i in range(n)]
    )
    rest = (p * (1 - mask)).sum(1)
    assert complementary_loss(logits, mask_t, "unbiased")[1].item() == pytest.approx(unbiased, rel=1e-10)
    assert complementary_loss(logits, mask_t, "ub_log")[0].item() == pytest.approx(np.mean(-np.log(rest)), rel=1e-10)
    assert complementary_loss(logits, mask_t, "ub_exp")[0].item() == pytest.approx(np.mean(np.exp(-rest)), rel=1e-10)


def test_multiple_reduces_to_single_for_sets_of_one():
    logits, comp = data()
    one_hot = torch.nn.functional.one_hot(comp, logits.shape[1])
    for correction in ("free", "max", "ga"):
        a = complementary_loss(logits, comp, "unbiased", correction)
        b = complementary_loss(logits, one_hot, "unbiased", correction)
        assert a[0].item() == pytest.approx(b[0].item(), rel=1e-12)
        assert a[1].item() == pytest.approx(b[1].item(), rel=1e-12)


def test_multiple_unbiased_in_expectation():
    """Sets of size d drawn uniformly among those avoiding the true class: averaged over every such set, the
    estimator equals the ordinary cross-entropy risk (exactly, by enumeration)."""
    import itertools

    g = torch.Generator().manual_seed(3)
    k, n = 5, 4
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    ordinary = torch.nn.functional.cross_entropy(logits, y).item()
    for d in (1, 2, 3, 4):
        values = []
        per_sample = [[c for c in itertools.combinations([j for j in range(k) if j != int(y[i])], d)] for i in range(n)]
        for choice in itertools.product(*per_sample):
            mask = torch.zeros(n, k, dtype=torch.int64)
            for i, cs in enumerate(choice):
                mask[i, list(cs)] = 1
            values.append(complementary_loss(logits, mask, "unbiased")[1].item())
        assert np.mean(values) == pytest.approx(ordinary, rel=1e-10)


@pytest.mark.parametrize("kind", ["unbiased", "ub_exp", "ub_log"])
def test_multiple_gradcheck(kind):
    logits, mask, _, _ = multi_data(1, n=5, k=4)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: complementary_loss(z, mask, kind)[0], (logits,))


def test_multiple_bad_input():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="sample 1 has 3 complementary labels"):
        complementary_loss(logits, torch.tensor([[1, 0, 0], [1, 1, 1]]), "ub_log")
    with pytest.raises(ValueError, match="sample 0 has 0"):
        complementary_loss(logits, torch.tensor([[0, 0, 0], [1, 0, 0]]), "unbiased")
    with pytest.raises(ValueError, match="for multiple complementary labels"):
        complementary_loss(logits, torch.tensor([[1, 0, 0], [0, 1, 0]]), "scl_nl")
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        complementary_loss(logits, torch.ones(2, 2), "ub_exp")


def test_stratified_unbiased_estimator_with_the_complementary_prior():
    """A_k = sum_j pbar_j mean_{c=j} l_k - (K - 1) pbar_k mean_{c=k} l_k, by hand; the batch's own frequencies as
    pbar give back the plain estimator; with the population pbar it is unbiased for the CE risk."""
    logits, comp = data(seed=4, n=12)
    z, c = logits.numpy(), comp.numpy()
    k = z.shape[1]
    ell = -np.log(softmax(z))
    pbar = np.array([0.1, 0.2, 0.3, 0.4])
    present = [j for j in range(k) if (c == j).any()]
    expected = np.array(
        [
            sum(pbar[j] * ell[c == j, m].mean() for j in present)
            - ((k - 1) * pbar[m] * ell[c == m, m].mean() if m in present else 0.0)
            for m in range(k)
        ]
    )
    out = complementary_loss(logits, comp, "unbiased", "free", complementary_prior=pbar.tolist())
    assert out[1].item() == pytest.approx(expected.sum())
    own = np.bincount(c, minlength=k) / len(c)
    plain = complementary_loss(logits, comp, "unbiased", "free")[1].item()
    assert complementary_loss(logits, comp, "unbiased", "free", complementary_prior=own)[1].item() == pytest.approx(
        plain
    )
    # unbiasedness with the population prior of uniform complementary labels over balanced classes: 1 / K each
    rng = np.random.default_rng(1)
    n = 20000
    big = torch.tensor(rng.normal(size=(n, k)))
    y = torch.tensor(rng.integers(0, k, n))
    comp_big = (y + torch.tensor(rng.integers(1, k, n))) % k
    ce = torch.nn.functional.cross_entropy(big, y).item()
    value = complementary_loss(big, comp_big, "unbiased", "free", complementary_prior=[1 / k] * k)[1].item()
    assert value == pytest.approx(ce, rel=0.03)
    with pytest.raises(ValueError, match="complementary_prior must be 4 non-negative"):
        complementary_loss(logits, comp, "unbiased", complementary_prior=[0.5, 0.5])


def test_task_reads_the_complementary_prior_and_ga_learns():
    """Gradient ascent with the data module's prior trains (above chance), where batch counts sent it below."""
    import lightning as L
    from aipflow_weaksup.multiclass import WeakDigitsDataModule, WeakMulticlassTask

    from aipflow.models import MLP

    L.seed_everything(0, verbose=False)
    dm = WeakDigitsDataModule(weak="complementary")
    task = WeakMulticlassTask(MLP(64, 10, hidden=[64]), ComplementaryLoss("unbiased", "ga"))
    trainer = quiet_trainer(max_epochs=8)
    trainer.fit(task, dm)
    assert np.allclose(task.loss.complementary_prior.numpy(), dm.complementary_prior)
    assert dm.complementary_prior.sum() == pytest.approx(1.0)
    assert trainer.test(task, dm, verbose=False)[0]["test/acc"] > 0.2  # chance 0.1; batch counts gave ~0.01
