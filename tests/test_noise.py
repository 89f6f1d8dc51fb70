import pytest
import torch

from aipflow.data.noise import apply_label_noise, empirical_transition_matrix, pair_flip_noise, symmetric_noise

K = 10


def labels(n=5000, seed=0):
    return torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_exact_convention_flips_exactly_rate_n_samples_to_other_classes(rate):
    y = labels()
    out = symmetric_noise(y, K, rate, "exact", torch.Generator().manual_seed(1))
    changed = (out.noisy != y).sum().item()
    assert changed == round(rate * y.numel())  # "exactly eta wrong": no flip lands on the true class
    assert out.realised_rate == pytest.approx(changed / y.numel())
    assert torch.equal(out.clean, y)
    if rate > 0:
        # flips are uniform over the other K-1 classes: off-diagonal mass rate/(K-1) each
        off = out.transition_matrix[~torch.eye(K, dtype=torch.bool)]
        assert off.mean().item() == pytest.approx(rate / (K - 1), rel=0.02)
        assert off.std().item() < 0.02


def test_uniform_convention_resamples_over_all_classes():
    y = labels(20000)
    out = symmetric_noise(y, K, 0.4, "uniform", torch.Generator().manual_seed(2))
    # a resampled label stays correct with probability 1/K
    assert out.realised_rate == pytest.approx(0.4 * (K - 1) / K, abs=0.01)
    expected_diag = 1 - 0.4 + 0.4 / K
    assert out.transition_matrix.diagonal().mean().item() == pytest.approx(expected_diag, abs=0.01)


def test_pair_flip_moves_to_next_class_only():
    y = labels()
    out = pair_flip_noise(y, K, 0.3, torch.Generator().manual_seed(3))
    moved = out.noisy != y
    assert moved.sum().item() == round(0.3 * y.numel())
    assert torch.equal(out.noisy[moved], (y[moved] + 1) % K)
    t = out.transition_matrix
    assert torch.allclose(t.sum(1), torch.ones(K, dtype=t.dtype))
    assert t.diagonal().mean().item() == pytest.approx(0.7, abs=0.02)


def test_empirical_transition_matrix_by_hand():
    clean = torch.tensor([0, 0, 1, 1, 1, 2])
    noisy = torch.tensor([0, 1, 1, 1, 2, 2])
    t = empirical_transition_matrix(clean, noisy, 3)
    expected = torch.tensor([[0.5, 0.5, 0], [0, 2 / 3, 1 / 3], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(t, expected)


def test_same_seed_same_noise_and_none_is_identity():
    y = labels(500)
    a = apply_label_noise(y, K, "symmetric", 0.3, seed=7)
    b = apply_label_noise(y, K, "symmetric", 0.3, seed=7)
    assert torch.equal(a.noisy, b.noisy)
    assert apply_label_noise(y, K, None, 0.0).realised_rate == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda y: symmetric_noise(y, K, 1.0), r"noise rate must lie in \[0, 1\), got 1.0"),
        (lambda y: symmetric_noise(y, K, -0.1), r"got -0.1"),
        (lambda y: pair_flip_noise(y, K, 0.6), r"\[0, 0.5\)"),
        (lambda y: symmetric_noise(y, K, 0.2, "sometimes"), r"convention must be one of"),
        (lambda y: symmetric_noise(y + 5, K, 0.2), r"labels must lie in \[0, 9\]"),
        (lambda y: symmetric_noise(y.float(), K, 0.2), r"1-D integer tensor"),
        (lambda y: apply_label_noise(y, K, "asym", 0.2), r"noise kind must be one of"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(labels(100))


def test_class_map_moves_exactly_rate_of_each_mapped_class():
    from aipflow.data.noise import DIGITS_CLASS_MAP, class_map_noise

    y = labels()
    out = class_map_noise(y, K, 0.4, generator=torch.Generator().manual_seed(4))
    for src, dst in DIGITS_CLASS_MAP.items():
        members = y == src
        moved = members & (out.noisy != y)
        assert moved.sum().item() == round(0.4 * members.sum().item())
        assert (out.noisy[moved] == dst).all()
    unmapped = ~torch.isin(y, torch.tensor(list(DIGITS_CLASS_MAP)))
    assert torch.equal(out.noisy[unmapped], y[unmapped])
    with pytest.raises(ValueError, match="class_map entries"):
        class_map_noise(y, K, 0.2, {3: 3})


def test_instance_dependent_noise_rate_and_determinism():
    from aipflow.data.noise import instance_dependent_noise

    g = torch.Generator().manual_seed(0)
    y = labels(4000)
    x = torch.randn(4000, 16, generator=g)
    out = instance_dependent_noise(y, x, K, 0.3, torch.Generator().manual_seed(1))
    assert out.realised_rate == pytest.approx(0.3, abs=0.02)  # flip rates q_i ~ N(0.3, 0.1^2) truncated
    # deterministic given the seed (the generator drives q, W and the draw)
    twin = instance_dependent_noise(y, x, K, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(out.noisy, twin.noisy)
    with pytest.raises(ValueError, match="needs the features"):
        apply_label_noise(y, K, "instance", 0.3)
