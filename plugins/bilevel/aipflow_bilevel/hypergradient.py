"""Hypergradients of a bilevel problem: the derivative of an outer (validation) loss with respect to continuous
hyper-parameters ``lambda`` through the inner (training) solution ``w*(lambda) = argmin_w L_T(w, lambda)``.

- **Implicit differentiation** (Lorraine, Vicol & Duvenaud, "Optimizing Millions of Hyperparameters by Implicit
  Differentiation", AISTATS 2020; the implicit function theorem at a stationary point of ``L_T``)::

      dL_V/dlambda = dL_V/dlambda|_direct - (d^2 L_T / dlambda dw) H^-1 dL_V/dw,    H = d^2 L_T / dw dw

  with the inverse-Hessian-vector product by a truncated **Neumann series** (their Algorithm 3:
  ``H^-1 v ~ alpha sum_{j=0}^{K} (I - alpha H)^j v``, converging when ``0 < alpha < 2 / lambda_max(H)``) or by
  **conjugate gradients** (Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016; ``H``
  positive definite, ``damping`` added to its diagonal). Every product is a Hessian-vector product (double
  backward); nothing of size ``n_params^2`` is formed.
- **Truncated unrolling** (Shaban et al., "Truncated Back-propagation for Bilevel Optimization", AISTATS 2019):
  ``K`` steps of gradient descent on ``L_T`` from the current weights, differentiated through; ``K`` large and a
  small step approach the implicit hypergradient at the optimum.

The losses are closures of the caller's model: ``inner_loss()`` and ``outer_loss()`` read the current parameters
and hyper-parameters (tensors with ``requires_grad``); the unrolled form takes functions of explicit parameter
lists instead, since it evaluates the losses at weights other than the model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["HYPERGRADIENT_METHODS", "implicit_hypergradient", "inverse_hvp", "unrolled_hypergradient"]

HYPERGRADIENT_METHODS = ("neumann", "cg")


def _grads(
    output: Tensor, inputs: Sequence[Tensor], create_graph: bool = False, retain_graph: bool | None = None
) -> list[Tensor]:
    grads = torch.autograd.grad(output, inputs, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def inverse_hvp(
    inner_grads: Sequence[Tensor],
    params: Sequence[Tensor],
    vector: Sequence[Tensor],
    method: str = "neumann",
    iterations: int = 20,
    alpha: float = 0.01,
    damping: float = 0.0,
) -> list[Tensor]:
    """``(H + damping I)^-1 v`` for ``H`` the Jacobian of ``inner_grads`` (built with ``create_graph``) in
    ``params``: the Neumann series with step ``alpha`` (``iterations`` terms), or ``iterations`` steps of
    conjugate gradients."""
    if method not in HYPERGRADIENT_METHODS:
        raise ValueError(f"hypergradient.method must be one of {HYPERGRADIENT_METHODS}, got {method!r}")
    if iterations < 1:
        raise ValueError(f"hypergradient.iterations must be >= 1, got {iterations}")

    def hvp(v: Sequence[Tensor]) -> list[Tensor]:
        out = _grads(_dot(inner_grads, v), params, retain_graph=True)  # the graph of inner_grads, reused
        return [h.detach() + damping * x for h, x in zip(out, v, strict=True)]

    v = [x.detach() for x in vector]
    if method == "neumann":
        term, total = list(v), list(v)
        for _ in range(iterations):
            term = [t - alpha * h for t, h in zip(term, hvp(term), strict=True)]
            total = [s + t for s, t in zip(total, term, strict=True)]
        return [alpha * s for s in total]
    x = [torch.zeros_like(t) for t in v]
    residual = list(v)
    direction = list(v)
    rr = float(_dot(residual, residual))
    for _ in range(iterations):
        if rr <= 1e-30:
            break
        hd = hvp(direction)
        step = rr / float(_dot(direction, hd))
        x = [a + step * d for a, d in zip(x, direction, strict=True)]
        residual = [r - step * h for r, h in zip(residual, hd, strict=True)]
        new_rr = float(_dot(residual, residual))
        direction = [r + (new_rr / rr) * d for r, d in zip(residual, direction, strict=True)]
        rr = new_rr
    return x


def implicit_hypergradient(
    inner_loss: Callable[[], Tensor],
    outer_loss: Callable[[], Tensor],
    params: Sequence[Tensor],
    hyperparameters: Sequence[Tensor],
    method: str = "neumann",
    iterations: int = 20,
    alpha: float = 0.01,
    damping: float = 0.0,
) -> list[Tensor]:
    """The implicit-function-theorem hypergradient ``dL_V/dlambda`` at the current weights (assumed near a
    stationary point of ``L_T``), one tensor per hyper-parameter."""
    with torch.enable_grad():
        outer = outer_loss()
        v_params = _grads(outer, params, retain_graph=True)
        direct = _grads(outer, hyperparameters)
        inner = inner_loss()
        inner_grads = _grads(inner, params, create_graph=True)
        solved = inverse_hvp(inner_grads, params, v_params, method, iterations, alpha, damping)
        mixed = _grads(_dot(inner_grads, solved), hyperparameters)  # (d^2 L_T / dlambda dw) H^-1 v
    return [d.detach() - m.detach() for d, m in zip(direct, mixed, strict=True)]


def unrolled_hypergradient(
    inner_loss: Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor],
    outer_loss: Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor],
    params: Sequence[Tensor],
    hyperparameters: Sequence[Tensor],
    steps: int = 10,
    lr: float = 0.1,
) -> list[Tensor]:
    """``dL_V(w_K)/dlambda`` for ``w_{k+1} = w_k - lr dL_T(w_k, lambda)/dw`` from ``w_0`` = ``params`` (detached),
    differentiated through the ``steps`` steps. ``inner_loss(params, hyper)`` / ``outer_loss(params, hyper)``
    take explicit lists."""
    if steps < 1:
        raise ValueError(f"hypergradient.steps must be >= 1, got {steps}")
    with torch.enable_grad():
        weights = [p.detach().requires_grad_(True) for p in params]
        for _ in range(steps):
            grads = _grads(inner_loss(weights, hyperparameters), weights, create_graph=True)
            weights = [w - lr * g for w, g in zip(weights, grads, strict=True)]
        return [g.detach() for g in _grads(outer_loss(weights, hyperparameters), hyperparameters)]
