"""Sharpness and generalisation diagnostics, functional: for any network, loss and batches (no Lightning). The
callback that logs and plots them during fit is :class:`aipflow.lightning.SharpnessMonitor`.

What is measured (the loss is the mean over a fixed set of batches; the network in eval mode, so that batch norm
uses its running statistics and dropout is off; nothing of the training state changes):

- ``hessian_top_eigenvalues``: the largest eigenvalues of the loss's Hessian by the Lanczos method (Lanczos 1950;
  with full re-orthogonalisation, in float64) on Hessian-vector products (Pearlmutter 1994; double backward), as in
  Ghorbani et al. 2019 and PyHessian (Yao et al. 2020);
- ``hessian_trace``: Hutchinson's estimator ``E[v^T H v]`` with Rademacher ``v`` (Hutchinson 1989), with its
  standard error;
- ``worst_case_sharpness``: ``E_S max_{||T^-1 delta||_2 <= rho} L_S(w + delta) - L_S(w)`` over sub-batches ``S``
  of ``m`` examples: SAM's m-sharpness (Foret et al. 2021; ``T = I``) and adaptive sharpness (Kwon et al. 2021;
  Andriushchenko et al. 2023: ``T = |w|``). The inner maximum is approached by projected normalised-gradient ascent
  (one step: SAM's ``delta = rho T^2 g / ||T g||``), keeping the largest loss found, so the value is a lower bound
  of the true maximum;
- for a Bayesian optimizer (IVON, bSAM): ``posterior_average_variance``, and a PAC-Bayes bound on the error of the
  Gibbs classifier (McAllester 1999, in Maurer's 2004 form: ``err_Q + sqrt((KL(Q || P) + ln(2 sqrt(N) / delta)) /
  (2 N))``) with the posterior ``Q = N(m, diag sigma^2)``, the Gaussian prior ``P = N(0, sigma_P^2 I)`` the
  optimizer's weight decay implies, and the Gibbs error estimated on the monitor's batches with posterior samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aipflow.losses.robust import upcast

__all__ = [
    "gaussian_kl",
    "hessian_top_eigenvalues",
    "hessian_trace",
    "pac_bayes_bound",
    "plot_sharpness",
    "posterior_average_variance",
    "worst_case_sharpness",
]

LossFn = Callable[[nn.Module, Any], Tensor]


def cross_entropy_loss(model: nn.Module, batch: Any) -> Tensor:
    """The mean cross-entropy of ``model(x)`` on ``y`` (a dict batch with ``x`` / ``y``, or a tuple)."""
    x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])
    return nn.functional.cross_entropy(upcast(model(x)), y)


def _batch_size(batch: Any) -> int:
    x = batch["x"] if isinstance(batch, dict) else batch[0]
    return len(x)


def _trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


class _EvalMode:
    """The network in eval mode for the measurement, its previous mode restored."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _hvp(model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], vector: list[Tensor]) -> list[Tensor]:
    """``H v`` of the example-weighted mean loss over ``batches`` (Pearlmutter's double backward)."""
    params = _trainable(model)
    total = sum(_batch_size(b) for b in batches)
    out = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for batch in batches:
        with torch.enable_grad():
            loss = loss_fn(model, batch) * (_batch_size(batch) / total)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            pairs = [(g, v) for g, v in zip(grads, vector, strict=True) if g is not None]
            dot = sum((g * v.to(g.dtype)).sum() for g, v in pairs)
            hv = torch.autograd.grad(dot, params, allow_unused=True)
        for o, h in zip(out, hv, strict=True):
            if h is not None:
                o += h.double()
    return out


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


@torch.no_grad()
def hessian_top_eigenvalues(
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn = cross_entropy_loss,
    k: int = 1,
    iterations: int = 20,
    seed: int = 0,
) -> list[float]:
    """The ``k`` largest (algebraic) Hessian eigenvalues, Ritz values of ``iterations`` Lanczos steps from a seeded
    Gaussian start, every new vector re-orthogonalised against all earlier ones (float64)."""
    params = _trainable(model)
    size = sum(p.numel() for p in params)
    iterations = min(iterations, size)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device) for p in params]
    norm = math.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    basis, alphas, betas = [v], [], []
    with _EvalMode(model):
        for j in range(iterations):
            w = _hvp(model, loss_fn, batches, basis[j])
            alpha = _dot(w, basis[j])
            alphas.append(alpha)
            for q in basis:  # full re-orthogonalisation (twice is enough: Parlett & Kahan)
                for _ in range(2):
                    c = _dot(w, q)
                    w = [x - c * y for x, y in zip(w, q, strict=True)]
            beta = math.sqrt(max(_dot(w, w), 0.0))
            if j == iterations - 1 or beta < 1e-10:
                break
            betas.append(beta)
            basis.append([x / beta for x in w])
    m = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(tridiagonal)
    return ritz.flip(0)[:k].tolist()


@torch.no_grad()
def hessian_trace(
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn = cross_entropy_loss,
    samples: int = 10,
    seed: int = 0,
) -> tuple[float, float]:
    """Hutchinson's estimate of ``tr H`` from ``samples`` Rademacher vectors, and its standard error."""
    if samples < 1:
        raise ValueError(f"hessian_trace.samples must be >= 1, got {samples}")
    params = _trainable(model)
    generator = torch.Generator().manual_seed(seed)
    values = []
    with _EvalMode(model):
        for _ in range(samples):
            v = [
                (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.float64) * 2 - 1).to(p.device)
                for p in params
            ]
            values.append(_dot(v, _hvp(model, loss_fn, batches, v)))
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1) / len(values)) if samples > 1 else 0.0
    return mean, spread


def _sub_batches(batches: Sequence[Any], m: int | None) -> list[Any]:
    if m is None:
        return list(batches)
    out = []
    for batch in batches:
        size = _batch_size(batch)
        for start in range(0, size - m + 1, m):  # whole sub-batches of m examples
            if isinstance(batch, dict):
                out.append({k: v[start : start + m] if isinstance(v, Tensor) else v for k, v in batch.items()})
            else:
                out.append(type(batch)(v[start : start + m] if isinstance(v, Tensor) else v for v in batch))
    if not out:
        raise ValueError(f"worst_case_sharpness.m is {m}, larger than every batch")
    return out


def worst_case_sharpness(
    model: nn.Module,
    batches: Sequence[Any],
    rho: float,
    loss_fn: LossFn = cross_entropy_loss,
    adaptive: bool = False,
    m: int | None = None,
    steps: int = 1,
) -> float:
    """``E_S max_{||T^-1 delta|| <= rho} L_S(w + delta) - L_S(w)`` over sub-batches of ``m`` examples (``None``:
    each batch as it is), ``T = |w|`` when ``adaptive`` else the identity; ``steps`` of projected normalised
    gradient ascent of length ``2 rho / steps`` (one: SAM's perturbation), the largest loss found kept. The weights
    are restored exactly."""
    if rho <= 0:
        raise ValueError(f"worst_case_sharpness.rho must be > 0, got {rho}")
    if steps < 1:
        raise ValueError(f"worst_case_sharpness.steps must be >= 1, got {steps}")
    params = _trainable(model)
    saved = [p.detach().clone() for p in params]
    scale = [p.detach().abs().double() if adaptive else torch.ones_like(p, dtype=torch.float64) for p in params]
    gaps = []
    with _EvalMode(model):
        try:
            for sub in _sub_batches(batches, m):
                with torch.no_grad():
                    base = float(loss_fn(model, sub))
                u = [torch.zeros_like(t) for t in scale]  # delta = T u: the ball is ||u|| <= rho
                best = base
                for _ in range(steps):
                    with torch.enable_grad():  # the gradient at w + T u (w at the first step)
                        loss = loss_fn(model, sub)
                        grads = torch.autograd.grad(loss, params, allow_unused=True)
                    grads = [
                        torch.zeros_like(t) if g is None else g.double() for g, t in zip(grads, scale, strict=True)
                    ]
                    tg = [t * g for t, g in zip(scale, grads, strict=True)]  # the gradient in u
                    norm = math.sqrt(sum(float((x * x).sum()) for x in tg))
                    if norm == 0.0:
                        break
                    size = rho if steps == 1 else 2 * rho / steps
                    u = [a + size * x / norm for a, x in zip(u, tg, strict=True)]
                    u_norm = math.sqrt(sum(float((x * x).sum()) for x in u))
                    if u_norm > rho:
                        u = [x * (rho / u_norm) for x in u]
                    with torch.no_grad():
                        for p, w, t, x in zip(params, saved, scale, u, strict=True):
                            p.copy_((w.double() + t * x).to(p.dtype))
                        best = max(best, float(loss_fn(model, sub)))
                with torch.no_grad():
                    for p, w in zip(params, saved, strict=True):
                        p.copy_(w)
                gaps.append(best - base)
        finally:
            with torch.no_grad():
                for p, w in zip(params, saved, strict=True):
                    p.copy_(w)
    return sum(gaps) / len(gaps)


def posterior_average_variance(optimizer: Any) -> float:
    """The mean of the posterior variances ``sigma^2`` over every trainable weight (IVON, bSAM)."""
    stds = optimizer.posterior_std()
    count = sum(s.numel() for s in stds)
    return float(sum(float((s.double() ** 2).sum()) for s in stds) / count)


def gaussian_kl(means: Iterable[Tensor], stds: Iterable[Tensor], prior_stds: Iterable[float]) -> float:
    """``KL(N(m, diag sigma^2) || N(0, sigma_P^2 I))`` summed over tensors, one prior std per tensor (float64)."""
    total = 0.0
    for m, s, p in zip(means, stds, prior_stds, strict=True):
        ratio = (s.double() / p) ** 2
        total += 0.5 * float((ratio + (m.double() / p) ** 2 - 1.0 - torch.log(ratio)).sum())
    return total


def pac_bayes_bound(empirical_error: float, kl: float, n: int, delta: float = 0.05) -> float:
    """McAllester's bound in Maurer's form: with probability ``1 - delta``, the Gibbs classifier's error is at
    most ``err + sqrt((KL + ln(2 sqrt(n) / delta)) / (2 n))`` (for a loss in [0, 1])."""
    return empirical_error + math.sqrt((kl + math.log(2 * math.sqrt(n) / delta)) / (2 * n))


def _prior_stds(optimizer: Any) -> list[float] | None:
    """The Gaussian prior's std per trainable tensor the optimizer implies, or ``None`` when it has none: IVON's
    prior precision is ``ess * weight_decay`` (Shen et al. 2024), bSAM's ``prior_precision`` (Moellenhoff & Khan
    2023)."""
    out = []
    size = getattr(optimizer, "train_size", None)
    for group in optimizer.param_groups:
        precision = group.get("prior_precision")
        if precision is None:
            decay = group.get("weight_decay", 0.0)
            precision = (size or 0.0) * decay
        if not precision or precision <= 0:
            return None
        out += [1.0 / math.sqrt(precision)] * sum(1 for p in group["params"] if p.requires_grad)
    return out


def plot_sharpness(histories: dict[str, list[dict[str, float]]], path: str | Path) -> Path:
    """One panel per measured quantity against the epoch (before training at epoch 0), a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        k
        for k in ("lambda_max", "hessian_trace", "m_sharpness", "adaptive_sharpness", "posterior_variance")
        if any(k in h for runs in histories.values() for h in runs)
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, runs in histories.items():
            points = [(h["epoch"] + 1, h[key]) for h in runs if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch (0: before training)")
        ax.grid(alpha=0.3)
        if key in ("lambda_max", "hessian_trace"):
            ax.set_yscale("symlog", linthresh=1.0)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def __getattr__(name: str) -> Any:
    # api 1.5 moved the callback under aipflow.lightning; the old name warns for a minor release (docs/plugins.md).
    # importlib, not an import statement: the lightning module imports this one, so this is the one way back up.
    if name == "SharpnessMonitor":
        import importlib
        import warnings

        warnings.warn(
            "aipflow.sharpness.SharpnessMonitor moved to aipflow.lightning.SharpnessMonitor (api 1.5); the old name "
            "goes in api 2.0",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("aipflow.lightning.sharpness_monitor").SharpnessMonitor
    raise AttributeError(f"module 'aipflow.sharpness' has no attribute {name!r}")
