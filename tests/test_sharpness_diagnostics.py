"""Sharpness diagnostics against independent references: on a quadratic with a known Hessian the Lanczos
eigenvalues are numpy's, Hutchinson is exact for a diagonal Hessian and within its standard error otherwise, SAM's
one-step m-sharpness and adaptive sharpness equal their closed forms; on a small network the top eigenvalue equals
the one of the Hessian torch builds entry by entry; the Gaussian KL equals torch.distributions'; the monitor logs
and plots inside fit without changing the training (weights equal to a run without it) and keeps its history in
checkpoints."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.models import MLP
from aipflow.optim import IVON
from aipflow.sharpness import (
    SharpnessMonitor,
    gaussian_kl,
    hessian_top_eigenvalues,
    hessian_trace,
    pac_bayes_bound,
    worst_case_sharpness,
)
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer

BATCHES = [(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))]  # the quadratic ignores its data


class Quadratic(nn.Module):
    def __init__(self, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor(a))
        self.register_buffer("b", torch.tensor(b))
        self.w = nn.Parameter(torch.tensor(w))

    def loss(self) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w + self.b @ self.w


def quadratic_loss(model, batch):
    return model.loss()


def problem(diagonal=False, seed=0):
    rng = np.random.default_rng(seed)
    if diagonal:
        a = np.diag(rng.uniform(-1.0, 4.0, 6))
    else:
        q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
        a = q @ np.diag([5.0, 3.0, 1.0, 0.5, -0.5, -2.0]) @ q.T  # indefinite, as a non-convex loss's Hessian
    return Quadratic(a, rng.normal(size=6), rng.normal(size=6)), a


def test_lanczos_finds_the_top_eigenvalues_of_a_known_hessian():
    model, a = problem()
    got = hessian_top_eigenvalues(model, BATCHES, quadratic_loss, k=3, iterations=6)
    assert got == pytest.approx(sorted(np.linalg.eigvalsh(a))[::-1][:3], rel=1e-10)


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_within_its_error_otherwise():
    model, a = problem(diagonal=True)
    mean, error = hessian_trace(model, BATCHES, quadratic_loss, samples=3)
    assert mean == pytest.approx(np.trace(a), rel=1e-12) and error == pytest.approx(0.0, abs=1e-12)
    model, a = problem()
    mean, error = hessian_trace(model, BATCHES, quadratic_loss, samples=200, seed=1)
    assert error > 0 and abs(mean - np.trace(a)) < 4 * error


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_sharpness_is_sams_perturbation_in_closed_form(adaptive):
    model, a = problem()
    w, b = model.w.detach().numpy().copy(), model.b.numpy()
    loss = lambda v: 0.5 * v @ a @ v + b @ v  # noqa: E731
    g = a @ w + b
    t = np.abs(w) if adaptive else np.ones_like(w)
    rho = 0.3
    delta = rho * t * t * g / np.linalg.norm(t * g)  # Foret et al. eq. 2; Kwon et al. eq. 9
    got = worst_case_sharpness(model, BATCHES, rho, quadratic_loss, adaptive=adaptive)
    assert got == pytest.approx(loss(w + delta) - loss(w), rel=1e-10)
    assert np.array_equal(model.w.detach().numpy(), w)  # restored exactly
    more = worst_case_sharpness(model, BATCHES, rho, quadratic_loss, adaptive=adaptive, steps=10)
    bound = rho * np.linalg.norm(t * g) + 0.5 * rho**2 * max(np.linalg.eigvalsh(np.diag(t) @ a @ np.diag(t)))
    assert got - 1e-12 <= more <= bound  # more ascent finds at least as much, never more than the ball allows


def tiny_network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def test_top_eigenvalue_of_a_network_equals_its_dense_hessians():
    net = tiny_network()
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)),
        (torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g)),
    ]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss_of(vector):  # the example-weighted mean cross-entropy over both batches, as a function of all weights
        params, start = [], 0
        for shape in shapes:
            params.append(vector[start : start + int(np.prod(shape))].view(shape))
            start += int(np.prod(shape))
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        hidden = torch.tanh(x @ params[0].T + params[1])
        return nn.functional.cross_entropy(hidden @ params[2].T + params[3], y)

    dense = torch.autograd.functional.hessian(loss_of, flat)
    eigenvalues = torch.linalg.eigvalsh(dense)
    got = hessian_top_eigenvalues(net, batches, iterations=len(flat))
    assert got[0] == pytest.approx(float(eigenvalues[-1]), rel=1e-8)
    trace, _ = hessian_trace(net, batches, samples=1)
    assert abs(trace - float(dense.trace())) < 10 * float(dense.abs().max())  # one Rademacher draw: loose


def test_gaussian_kl_and_the_pac_bayes_bound():
    g = torch.Generator().manual_seed(0)
    means = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g)]
    stds = [torch.rand(3, 2, generator=g) + 0.1, torch.rand(4, generator=g) + 0.1]
    priors = [0.7, 1.3]
    want = sum(
        float(
            torch.distributions.kl_divergence(
                torch.distributions.Normal(m.double(), s.double()),
                torch.distributions.Normal(
                    torch.tensor(0.0, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
                ),
            ).sum()
        )
        for m, s, p in zip(means, stds, priors)
    )
    assert gaussian_kl(means, stds, priors) == pytest.approx(want, rel=1e-12)
    assert pac_bayes_bound(0.1, 50.0, 1000, 0.05) == pytest.approx(
        0.1 + np.sqrt((50.0 + np.log(2 * np.sqrt(1000) / 0.05)) / 2000), rel=1e-12
    )


def fit(tmp_path, monitor: SharpnessMonitor | None, epochs=2):
    torch.manual_seed(0)
    task = ClassificationTask(
        MLP(hidden=(16,), dropout=0.2),
        optimizer=functools.partial(IVON, lr=0.1, seed=1, weight_decay=1e-3),
        reliability_diagram=False,
    )
    callbacks = [monitor] if monitor is not None else []
    trainer = quiet_trainer(
        max_epochs=epochs,
        limit_train_batches=4,
        limit_val_batches=1,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
    )
    trainer.fit(task, DigitsDataModule(batch_size=32, label_noise=LabelNoise("symmetric", 0.2)))
    return task, trainer


def test_the_monitor_logs_and_plots_without_changing_the_training(tmp_path):
    plain, _ = fit(tmp_path / "plain", None)
    monitor = SharpnessMonitor(num_batches=2, lanczos_iterations=5, trace_samples=2, m=16, posterior_samples=2)
    watched, trainer = fit(tmp_path / "watched", monitor)
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)  # dropout's RNG, batch norm, weights: all untouched by the measurements
    assert [h["epoch"] for h in monitor.history] == [-1.0, 0.0, 1.0]
    logged = trainer.logged_metrics
    for key in ("lambda_max", "hessian_trace", "m_sharpness", "adaptive_sharpness", "posterior_variance"):
        assert f"sharpness/{key}" in logged
    last = monitor.history[-1]
    assert last["lambda_max"] > 0 and last["m_sharpness"] > 0 and last["adaptive_sharpness"] > 0
    assert 0 <= last["gibbs_error"] <= 1 and last["pac_bayes_bound"] > last["gibbs_error"]
    # the bound from the trained IVON state, by numpy from the papers' equations: posterior N(m, 1 / (n (h + wd))),
    # prior N(0, 1 / (n wd)) (Shen et al. 2024), KL of diagonal Gaussians, McAllester / Maurer's bound
    optimizer = trainer.optimizers[0]
    n, wd = float(optimizer.ess), 1e-3
    kl = 0.0
    for param in (p for p in watched.parameters() if p.requires_grad):
        m = param.detach().double().numpy()
        h = optimizer.state[param]["hess"].double().numpy()
        var_q, var_p = 1.0 / (n * (h + wd)), 1.0 / (n * wd)
        kl += 0.5 * np.sum(var_q / var_p + m**2 / var_p - 1.0 - np.log(var_q / var_p))
    assert last["kl"] == pytest.approx(kl, rel=1e-6)
    bound = last["gibbs_error"] + np.sqrt((kl + np.log(2 * np.sqrt(n) / 0.05)) / (2 * n))
    assert last["pac_bayes_bound"] == pytest.approx(bound, rel=1e-6)
    assert (tmp_path / "watched" / "lightning_logs" / "version_0" / "sharpness.png").stat().st_size > 0
    restored = SharpnessMonitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.history == monitor.history


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="SharpnessMonitor.num_batches must be >= 1, got 0"):
        SharpnessMonitor(num_batches=0)
    model, _ = problem()
    with pytest.raises(ValueError, match="worst_case_sharpness.rho must be > 0, got 0.0"):
        worst_case_sharpness(model, BATCHES, 0.0, quadratic_loss)
