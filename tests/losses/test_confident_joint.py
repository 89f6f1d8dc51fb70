"""T from Confident Learning's confident joint (Northcutt et al., JAIR 2021), against a per-sample loop written
from the paper's definitions, a hand-counted example, and recovery of known transition matrices."""

import pytest
import torch

from aipflow.losses import estimate_transition_matrix, estimate_transition_matrix_confident_joint


def loop_reference(p, labels):
    """Sec. 3.1 line by line, with Python loops (independent of the vectorised code)."""
    n, k = len(p), len(p[0])
    t = [
        sum(p[x][j] for x in range(n) if labels[x] == j) / sum(1 for x in range(n) if labels[x] == j) for j in range(k)
    ]
    c = [[0.0] * k for _ in range(k)]
    for x in range(n):
        candidates = [j for j in range(k) if p[x][j] >= t[j]]
        if candidates:
            j = max(candidates, key=lambda m: p[x][m])
            c[labels[x]][j] += 1
    size = [sum(1 for x in range(n) if labels[x] == i) for i in range(k)]
    q = [[c[i][j] / max(sum(c[i]), 1) * size[i] for j in range(k)] for i in range(k)]
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    col = [sum(q[i][j] for i in range(k)) for j in range(k)]
    return torch.tensor([[q[i][j] / col[j] for i in range(k)] for j in range(k)])  # T[clean j, noisy i]


def test_matches_the_loop_reference_on_random_posteriors():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(200, 4, generator=g).pow(3)
    p = p / p.sum(1, keepdim=True)
    labels = torch.randint(0, 4, (200,), generator=g)
    got = estimate_transition_matrix_confident_joint(p, labels)
    want = loop_reference(p.tolist(), labels.tolist())
    assert torch.allclose(got, want.float(), atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(4))


def test_hand_counted_example():
    # two classes; thresholds t_0 = mean(0.9, 0.8, 0.3) = 2/3, t_1 = mean(0.6, 0.9) = 0.75
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    # C: label 0 -> clean 0 twice (0.9, 0.8 >= 2/3), the third is above neither (0.3 < 2/3, 0.7 < 0.75);
    # label 1 -> [0.4, 0.6]: neither; [0.1, 0.9]: clean 1. C = [[2, 0], [0, 1]]
    # Q = [[3, 0], [0, 2]] / 5: no noise, T = I
    assert torch.equal(estimate_transition_matrix_confident_joint(p, labels), torch.eye(2))


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_recovers_a_known_transition_matrix_from_ideal_noisy_posteriors(kind):
    # every sample's noisy posterior is exactly T's row for its clean class, labels drawn from it
    k, n, rate = 5, 20000, 0.3
    if kind == "symmetric":
        t = torch.full((k, k), rate / (k - 1)).fill_diagonal_(1 - rate)
    else:
        t = (1 - rate) * torch.eye(k) + rate * torch.roll(torch.eye(k), 1, dims=1)
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, k, (n,), generator=g)
    noisy = torch.multinomial(t[clean], 1, generator=g).squeeze(1)
    estimate = estimate_transition_matrix_confident_joint(t[clean], noisy)
    assert (estimate - t).abs().max() < 0.02


def test_overall_under_or_over_confidence_does_not_move_it_where_anchors_do():
    # the same ranking of posteriors, sharpened: anchors read the sharpened tail, the per-class thresholds adapt
    k, n, rate = 4, 8000, 0.2
    t = torch.full((k, k), rate / (k - 1)).fill_diagonal_(1 - rate)
    g = torch.Generator().manual_seed(2)
    clean = torch.randint(0, k, (n,), generator=g)
    noisy = torch.multinomial(t[clean], 1, generator=g).squeeze(1)
    jitter = 0.05 * torch.randn(n, k, generator=g)
    logits = t[clean].log() + jitter
    calibrated, sharpened = logits.softmax(1), (1.8 * logits).softmax(1)
    cj = [estimate_transition_matrix_confident_joint(p, noisy) for p in (calibrated, sharpened)]
    anchors = [estimate_transition_matrix(p, 97.0) for p in (calibrated, sharpened)]
    assert (cj[0] - t).abs().max() < 0.03 and (cj[1] - t).abs().max() < 0.03
    assert (anchors[1] - t).abs().max() > 0.1  # the anchors take the sharpened confidence for less noise


def test_bad_input():
    with pytest.raises(ValueError, match="none are labelled"):
        estimate_transition_matrix_confident_joint(torch.full((3, 3), 1 / 3), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="must be"):
        estimate_transition_matrix_confident_joint(torch.rand(3, 2), torch.tensor([0, 1]))
