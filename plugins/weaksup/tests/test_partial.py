"""Partial-label losses against numpy formulas and finite differences."""

import numpy as np
import pytest
import torch
from aipflow_weaksup.risks.partial import PartialLabelLoss, cc_loss


def data(seed=0, n=6, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    candidates = (torch.rand(n, k, generator=g) < 0.5).long()
    candidates[torch.arange(n), torch.randint(0, k, (n,), generator=g)] = 1  # never empty
    return logits, candidates


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_cc_formula_and_gradient():
    logits, cand = data()
    p = softmax(logits.numpy())
    expected = np.mean(-np.log((p * cand.numpy()).sum(1)))
    assert cc_loss(logits, cand).item() == pytest.approx(expected)
    assert torch.autograd.gradcheck(lambda z: cc_loss(z, cand), (logits.clone().requires_grad_(True),))


def test_proden_weights_start_uniform_then_follow_the_model():
    logits, cand = data()
    idx = torch.arange(6)
    loss = PartialLabelLoss("proden", num_samples=6)
    first = loss(logits, cand, index=idx)
    uniform = cand.double() / cand.sum(1, keepdim=True)
    assert first.item() == pytest.approx(-(uniform * logits.log_softmax(1)).sum(1).mean().item())
    p = logits.softmax(1) * cand
    assert torch.allclose(loss.weights.double(), p / p.sum(1, keepdim=True), atol=1e-6)
    second = loss(logits, cand, index=idx)
    assert second.item() == pytest.approx(
        -((p / p.sum(1, keepdim=True)) * logits.log_softmax(1)).sum(1).mean().item(), abs=1e-6
    )


def test_rc_adopts_weights_at_epoch_end():
    logits, cand = data()
    idx = torch.arange(6)
    loss = PartialLabelLoss("rc", num_samples=6)
    loss(logits, cand, index=idx)
    before = loss.weights.clone()
    loss(logits, cand, index=idx)
    assert torch.equal(before, loss.weights)  # RC keeps its weights within the epoch
    loss.end_epoch()
    p = logits.softmax(1) * cand
    assert torch.allclose(loss.weights.double(), p / p.sum(1, keepdim=True), atol=1e-6)


def test_bad_input():
    logits, cand = data()
    empty = cand.clone()
    empty[0] = 0
    with pytest.raises(ValueError, match="at least one class"):
        cc_loss(logits, empty)
    with pytest.raises(ValueError, match="needs each sample's index"):
        PartialLabelLoss("proden", num_samples=6)(logits, cand)
    with pytest.raises(ValueError, match="kind must be one of"):
        PartialLabelLoss("lws2")


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("leverage", [1.0, 2.0])
def test_lws_formula_weights_and_gradient(leverage):
    """Wen et al. (2021): sum_S w psi(f) + beta sum_notS w psi(-f), psi(z) = sigmoid(-z), weights per part."""
    logits, cand = data(seed=3)
    cand[0] = 1  # a sample whose candidate set is every class (no non-candidate part)
    f, m = logits.numpy(), cand.numpy().astype(float)
    idx = torch.arange(6)
    loss = PartialLabelLoss("lws", num_samples=6, leverage=leverage)
    first = loss(logits, cand, index=idx).item()
    rest = 1 - m
    w0 = m / m.sum(1, keepdims=True) + rest / np.maximum(rest.sum(1, keepdims=True), 1)
    expected = np.mean((w0 * (m * sigmoid(-f) + leverage * rest * sigmoid(f))).sum(1))
    assert first == pytest.approx(expected)
    p = softmax(f)
    w1 = p * m / (p * m).sum(1, keepdims=True) + p * rest / np.maximum((p * rest).sum(1, keepdims=True), 1e-300)
    assert np.allclose(loss.weights.double().numpy(), w1, atol=1e-6)
    assert np.allclose(loss.weights[0].double().numpy(), p[0] / p[0].sum(), atol=1e-6)
    second = loss(logits, cand, index=idx).item()
    assert second == pytest.approx(np.mean((w1 * (m * sigmoid(-f) + leverage * rest * sigmoid(f))).sum(1)), abs=1e-6)
    loss.eval()  # weights held fixed: the loss is a smooth function of the logits
    assert torch.autograd.gradcheck(lambda z: loss(z, cand, idx), (logits.clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="leverage"):
        PartialLabelLoss("lws", leverage=-1.0)
