"""Every loss against an independent per-sample formula (numpy, float64) and finite-difference gradients."""

import math

import numpy as np
import pytest
import torch

from aipflow import losses as L


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def data(n=7, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, k, generator=g, dtype=torch.float64)
    target = torch.randint(0, k, (n,), generator=g)
    return logits, target


# independent per-sample formulas, straight from the papers (p: softmax, y: label)
def f_gce(p, y, q=0.7):
    return (1 - p[y] ** q) / q


def f_tgce(p, y, q=0.7, k=0.5):
    return (1 - p[y] ** q) / q if p[y] > k else (1 - k**q) / q


def f_mae(p, y):
    onehot = np.eye(len(p))[y]
    return np.abs(p - onehot).sum()


def f_rce(p, y, a=-4.0):
    q = np.eye(len(p))[y]
    logq = np.where(q > 0, 0.0, a)
    return -(p * logq).sum()


def f_ce(p, y):
    return -math.log(p[y])


def f_sce(p, y, alpha=0.1, beta=1.0):
    return alpha * f_ce(p, y) + beta * f_rce(p, y)


def f_nce(p, y):
    return -math.log(p[y]) / -np.log(p).sum()


def f_nfl(p, y, gamma=0.5):
    fl = -((1 - p) ** gamma) * np.log(p)
    return fl[y] / fl.sum()


def f_boot_soft(p, y, beta=0.95):
    t = np.eye(len(p))[y]
    return -((beta * t + (1 - beta) * p) * np.log(p)).sum()


def f_boot_hard(p, y, beta=0.8):
    return -(beta * math.log(p[y]) + (1 - beta) * math.log(p[p.argmax()]))


def f_ls(p, y, e=0.1):
    t = (1 - e) * np.eye(len(p))[y] + e / len(p)
    return -(t * np.log(p)).sum()


T = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.8, 0.0, 0.1], [0.0, 0.3, 0.6, 0.1], [0.05, 0.05, 0.1, 0.8]])


def f_forward(p, y):
    return -math.log((p @ T)[y])


def f_backward(p, y):
    return (np.linalg.inv(T) @ -np.log(p))[y]


CASES = [
    ("gce", L.gce_loss, L.GCE(), f_gce),
    ("tgce", L.truncated_gce_loss, L.TruncatedGCE(), f_tgce),
    ("mae", L.mae_loss, L.MAE(), f_mae),
    ("rce", L.rce_loss, None, f_rce),
    ("sce", L.sce_loss, L.SCE(), f_sce),
    ("nce", L.nce_loss, L.NCE(), f_nce),
    ("nfl", L.nfl_loss, L.NFL(), f_nfl),
    ("nce_rce", L.nce_rce_loss, L.NCERCE(), lambda p, y: f_nce(p, y) + f_rce(p, y)),
    ("nfl_rce", L.nfl_rce_loss, L.NFLRCE(), lambda p, y: f_nfl(p, y) + f_rce(p, y)),
    ("nce_mae", L.nce_mae_loss, L.NCEMAE(), lambda p, y: f_nce(p, y) + f_mae(p, y)),
    ("boot_soft", L.bootstrap_soft_loss, L.BootstrapSoft(), f_boot_soft),
    ("boot_hard", L.bootstrap_hard_loss, L.BootstrapHard(), f_boot_hard),
    ("ls", L.label_smoothing_loss, L.LabelSmoothing(), f_ls),
    (
        "nls",
        lambda z, y, reduction="mean": L.label_smoothing_loss(z, y, -0.2, reduction),
        L.LabelSmoothing(-0.2),
        lambda p, y: f_ls(p, y, -0.2),
    ),
    (
        "forward",
        lambda z, y, reduction="mean": L.forward_corrected_loss(z, y, torch.tensor(T), reduction),
        L.ForwardCorrection(T.tolist()),
        f_forward,
    ),
    (
        "backward",
        lambda z, y, reduction="mean": L.backward_corrected_loss(z, y, torch.tensor(T), reduction),
        L.BackwardCorrection(T.tolist()),
        f_backward,
    ),
]


@pytest.mark.parametrize("name, fn, module, formula", CASES, ids=[c[0] for c in CASES])
def test_matches_independent_formula(name, fn, module, formula):
    logits, target = data()
    p = softmax(logits.numpy())
    expected = np.array([formula(p[i], int(target[i])) for i in range(len(target))])
    per_sample = fn(logits, target, reduction="none")
    assert np.allclose(per_sample.detach().numpy(), expected, atol=1e-10)
    assert fn(logits, target).item() == pytest.approx(expected.mean(), abs=1e-10)
    assert fn(logits, target, reduction="sum").item() == pytest.approx(expected.sum(), abs=1e-9)
    if module is not None:  # modules keep T as a float32 buffer
        assert module(logits, target).item() == pytest.approx(expected.mean(), abs=1e-6)


@pytest.mark.parametrize("name, fn, module, formula", CASES, ids=[c[0] for c in CASES])
def test_gradients_match_finite_differences(name, fn, module, formula):
    logits, target = data(seed=1)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fn(z, target), (logits,), eps=1e-6, atol=1e-5)


def test_gce_limits():
    logits, target = data()
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert L.gce_loss(logits, target, q=1e-6).item() == pytest.approx(ce.item(), rel=1e-4)  # q -> 0: CE
    assert L.gce_loss(logits, target, q=1.0).item() == pytest.approx(L.mae_loss(logits, target).item() / 2)


def test_t_revision_reweights_and_learns_its_slack():
    logits, target = data()
    loss = L.TRevision(T.tolist())
    p = softmax(logits.numpy())
    noisy = p @ T
    w = p[np.arange(len(target)), target] / noisy[np.arange(len(target)), target]
    expected = np.mean(-w * np.log(noisy[np.arange(len(target)), target]))
    assert loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    loss(logits, target).backward()
    assert loss.delta.grad is not None and loss.delta.grad.abs().sum() > 0


def test_anchor_point_estimator_recovers_t():
    rng = np.random.default_rng(0)
    k, n = 4, 4000
    # clean posteriors: 40 % near-certain samples (10 % per class, as confident training examples are), the
    # rest mixed
    clean = rng.dirichlet(np.ones(k), size=n)
    confident = rng.random(n) < 0.4
    classes = rng.integers(0, k, n)
    clean[confident] = 0.002 / (k - 1)
    clean[confident, classes[confident]] = 0.998
    noisy = clean @ T
    est = L.estimate_transition_matrix(torch.tensor(noisy))
    assert np.abs(est.numpy() - T).max() < 0.01  # stated tolerance with exact posteriors: 0.01
    # a model's posteriors are noisy: argmax anchors pick outliers, the 97th-percentile variant does not
    jitter = noisy * rng.uniform(0.8, 1.2, size=noisy.shape)
    jitter /= jitter.sum(1, keepdims=True)
    est97 = L.estimate_transition_matrix(torch.tensor(jitter), percentile=97)
    err97 = np.abs(est97.numpy() - T).max()
    err_max = np.abs(L.estimate_transition_matrix(torch.tensor(jitter)).numpy() - T).max()
    assert err97 < 0.1 and err97 < err_max  # stated tolerance with 20 % multiplicative noise: 0.1
    assert np.allclose(est97.sum(1).numpy(), 1, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda z, y: L.gce_loss(z, y, q=0.0), r"q must lie in \(0, 1\], got 0.0"),
        (lambda z, y: L.GCE(q=1.5), r"q must lie in \(0, 1\], got 1.5"),
        (lambda z, y: L.gce_loss(z, y + 10), r"labels out of range: target must lie in \[0, 3\]"),
        (lambda z, y: L.mae_loss(z[0], y), r"logits must have shape \(N, K\)"),
        (lambda z, y: L.mae_loss(z, y[:3]), r"target must have shape \(7,\)"),
        (lambda z, y: L.ForwardCorrection([[0.5, 0.6], [0.5, 0.5]]), "rows must sum to 1"),
        (lambda z, y: L.ForwardCorrection(np.eye(3).tolist(), num_classes=4), r"must be \(4, 4\)"),
        (lambda z, y: L.ForwardCorrection([[1.0, 0.0, 0.0]]), "must be square"),
        (lambda z, y: L.ForwardCorrection([[1.2, -0.2], [0.0, 1.0]]), "non-negative"),
        (lambda z, y: L.GCE(reduction="avg"), "reduction must be one of"),
        (lambda z, y: L.LabelSmoothing(1.0), "smoothing must be < 1"),
        (lambda z, y: L.estimate_transition_matrix(torch.rand(5, 3), percentile=0), "percentile must lie in"),
    ],
)
def test_bad_input(call, match):
    logits, target = data()
    with pytest.raises(ValueError, match=match):
        call(logits, target)
