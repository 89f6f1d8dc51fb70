"""Hypergradients on ridge regression, where everything is known in closed form (float64): the implicit
hypergradient (conjugate gradients, Neumann series) and truncated unrolling equal ``g_V^T dw*/dlambda`` with
``dw*/dlambda = -(A + e^lambda I)^-1 e^lambda w*``; hypergradient descent with the inner problem solved by gradient
descent (warm-started, as during fit) reaches the optimal regularisation of an orthogonal design,
``e^lambda* = ||c||^2 / c^T d - 1``; bad settings are one line."""

import math

import numpy as np
import pytest
import torch
from aipflow_bilevel.hypergradient import implicit_hypergradient, inverse_hvp, unrolled_hypergradient


def ridge(seed=0, orthogonal=False):
    rng = np.random.default_rng(seed)
    n, m, d = 40, 30, 5
    if orthogonal:  # X^T X / n = I for both splits
        xt = np.linalg.qr(rng.normal(size=(n, d)))[0] * math.sqrt(n)
        xv = np.linalg.qr(rng.normal(size=(m, d)))[0] * math.sqrt(m)
    else:
        xt, xv = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    w_true = rng.normal(size=d)
    yt = xt @ w_true + 0.5 * rng.normal(size=n)
    yv = xv @ w_true + 0.5 * rng.normal(size=m)
    return [torch.tensor(a) for a in (xt, yt, xv, yv)]


def closed_form(xt, yt, xv, yv, log_reg):
    n, m, d = len(yt), len(yv), xt.shape[1]
    a, c = xt.T @ xt / n, xt.T @ yt / n
    mu = math.exp(log_reg)
    w = np.linalg.solve(a + mu * np.eye(d), c)
    dw = -np.linalg.solve(a + mu * np.eye(d), mu * w)
    g_v = xv.T @ (xv @ w - yv) / m
    return w, float(g_v @ dw), a


def losses(xt, yt, xv, yv):
    def inner(w, log_reg):
        return 0.5 * ((xt @ w - yt) ** 2).mean() + 0.5 * torch.exp(log_reg) * (w * w).sum()

    def outer(w, log_reg):
        return 0.5 * ((xv @ w - yv) ** 2).mean()

    return inner, outer


@pytest.mark.parametrize("method", ["cg", "neumann"])
def test_implicit_hypergradient_equals_the_closed_form(method):
    data = ridge()
    log_reg = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    w_star, want, a = closed_form(*(t.numpy() for t in data), -1.0)
    w = torch.tensor(w_star, requires_grad=True)
    inner, outer = losses(*data)
    curvature = np.linalg.eigvalsh(a + math.exp(-1.0) * np.eye(5))
    options = {"iterations": 5} if method == "cg" else {"iterations": 800, "alpha": 1.0 / curvature[-1]}
    (got,) = implicit_hypergradient(
        lambda: inner(w, log_reg), lambda: outer(w, log_reg), [w], [log_reg], method, **options
    )
    assert float(got) == pytest.approx(want, rel=1e-8)


def test_truncated_unrolling_approaches_the_implicit_hypergradient():
    data = ridge()
    log_reg = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    w_star, want, a = closed_form(*(t.numpy() for t in data), -1.0)
    lr = 1.0 / np.linalg.eigvalsh(a + math.exp(-1.0) * np.eye(5))[-1]
    inner, outer = losses(*data)
    short = unrolled_hypergradient(
        lambda p, h: inner(p[0], h[0]),
        lambda p, h: outer(p[0], h[0]),
        [torch.tensor(w_star)],
        [log_reg],
        steps=3,
        lr=lr,
    )[0]
    long = unrolled_hypergradient(
        lambda p, h: inner(p[0], h[0]),
        lambda p, h: outer(p[0], h[0]),
        [torch.tensor(w_star)],
        [log_reg],
        steps=400,
        lr=lr,
    )[0]
    assert float(long) == pytest.approx(want, rel=1e-6)
    assert abs(float(short) - want) > abs(float(long) - want)  # truncation biases it


def test_inverse_hvp_solves_the_linear_system():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    h = q @ torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)) @ q.T
    w = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(0.5 * w @ h @ w, [w], create_graph=True)
    v = [torch.randn(6, generator=g, dtype=torch.float64)]
    want = torch.linalg.solve(h + 0.1 * torch.eye(6, dtype=torch.float64), v[0])
    (cg,) = inverse_hvp(grads, [w], v, "cg", iterations=6, damping=0.1)
    (neumann,) = inverse_hvp(grads, [w], v, "neumann", iterations=600, alpha=0.2, damping=0.1)
    torch.testing.assert_close(cg, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(neumann, want, rtol=1e-8, atol=1e-8)


def test_hypergradient_descent_finds_the_optimal_regularisation():
    xt, yt, xv, yv = ridge(seed=7, orthogonal=True)
    c, d = (xt.T @ yt / len(yt)).numpy(), (xv.T @ yv / len(yv)).numpy()
    assert 0 < c @ d < c @ c  # an interior optimum exists
    optimum = math.log((c @ c) / (c @ d) - 1.0)
    inner, outer = losses(xt, yt, xv, yv)
    log_reg = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)

    def inner_now():
        return inner(w, log_reg)

    def outer_now():
        return outer(w, log_reg)

    for _ in range(300):  # the inner problem by gradient descent, warm-started; then one hyper-step
        for _ in range(20):
            (grad,) = torch.autograd.grad(inner_now(), [w])
            with torch.no_grad():
                w -= 0.5 * grad
        (hyper,) = implicit_hypergradient(inner_now, outer_now, [w], [log_reg], "cg", 5)
        with torch.no_grad():
            log_reg -= 2.0 * hyper
    assert float(log_reg.detach()) == pytest.approx(optimum, abs=1e-4)


def test_bad_settings_are_one_line():
    w = torch.zeros(2, requires_grad=True)
    grads = torch.autograd.grad((w * w).sum(), [w], create_graph=True)
    with pytest.raises(ValueError, match="hypergradient.method must be one of"):
        inverse_hvp(grads, [w], [torch.ones(2)], "lissa")
    with pytest.raises(ValueError, match="hypergradient.iterations must be >= 1, got 0"):
        inverse_hvp(grads, [w], [torch.ones(2)], "cg", iterations=0)
    with pytest.raises(ValueError, match="hypergradient.steps must be >= 1, got 0"):
        unrolled_hypergradient(lambda p, h: (p[0] ** 2).sum(), lambda p, h: p[0].sum(), [w], [w], steps=0)
