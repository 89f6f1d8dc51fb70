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
