"""Noise-robust classification losses: functional forms (``*_loss``) and modules, written from the papers.

All take ``logits`` of shape (N, K) and integer ``target`` of shape (N,), and reduce with ``reduction``
("mean" | "sum" | "none"). ``p = softmax(logits)``; ``p_y`` is the probability of the given (possibly noisy)
label.

| loss | paper | defaults |
| --- | --- | --- |
| GCE (L_q) | Zhang & Sabuncu, NeurIPS 2018 | q = 0.7 |
| truncated GCE | same | q = 0.7, k = 0.5 |
| SCE = a CE + b RCE | Wang et al., ICCV 2019 | a = 0.1, b = 1.0, A = log 0 := -4 |
| MAE | Ghosh et al., AAAI 2017 | |
| NCE, NFL, and APL: NCE+RCE, NFL+RCE, NCE+MAE | Ma et al., ICML 2020 | a = b = 1, gamma = 0.5 |
| bootstrapping soft / hard | Reed et al., ICLR 2015 workshop | beta = 0.95 / 0.8 |
| label smoothing / negative label smoothing | Szegedy et al. 2016 / Wei et al., ICML 2022 | smoothing in (-inf, 1) |
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

REDUCTIONS = ("mean", "sum", "none")


def check_inputs(logits: Tensor, target: Tensor) -> None:
    """Shapes and label range, with messages that say what was expected."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {tuple(logits.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
    if target.dtype.is_floating_point:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(
            f"labels out of range: target must lie in [0, {logits.shape[1] - 1}], "
            f"got [{int(target.min())}, {int(target.max())}]"
        )


def upcast(x: Tensor) -> Tensor:
    """Half-precision logits are scored in fp32; fp32 and fp64 stay as they are (float64 for gradchecks)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _p_y(logits: Tensor, target: Tensor) -> Tensor:
    return upcast(logits).softmax(1).gather(1, target[:, None]).squeeze(1)


def _log_p_y(logits: Tensor, target: Tensor) -> Tensor:
    return upcast(logits).log_softmax(1).gather(1, target[:, None]).squeeze(1)


def _p_y_pow(logits: Tensor, target: Tensor, q: float) -> Tensor:
    """``p_y^q`` as ``exp(q log p_y)``: ``pow`` at an underflowed ``p_y = 0`` has gradient inf x 0 = NaN."""
    return torch.exp(q * _log_p_y(logits, target))


def log1m_softmax(logits: Tensor) -> Tensor:
    """``log(1 - p_k)`` for every class, finite with a finite gradient wherever the logits are: for the top class
    as the log-sum of the others' probabilities (``1 - p`` rounds to 0 there), elsewhere ``log1p(-p_k)`` with
    ``p_k <= 1/2``. The top class's slot is zeroed before ``log1p`` so that no inf enters the backward pass."""
    log_p = upcast(logits).log_softmax(1)
    top = log_p.argmax(1, keepdim=True)
    others = log_p.scatter(1, top, float("-inf")).logsumexp(1, keepdim=True)
    rest = torch.log1p(-log_p.exp().scatter(1, top, 0.0))
    return rest.scatter(1, top, others)


def _check_q(q: float) -> None:
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must lie in (0, 1], got {q}")


def _check_nonnegative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


# ------------------------------------------------------------------------------------------------ functional
def gce_loss(logits: Tensor, target: Tensor, q: float = 0.7, reduction: str = "mean") -> Tensor:
    """Generalised cross-entropy ``L_q = (1 - p_y^q) / q`` (q -> 0: CE; q = 1: MAE / 2)."""
    _check_q(q)
    check_inputs(logits, target)
    return reduce((1 - _p_y_pow(logits, target, q)) / q, reduction)


def truncated_gce_loss(
    logits: Tensor, target: Tensor, q: float = 0.7, k: float = 0.5, reduction: str = "mean"
) -> Tensor:
    """Truncated L_q: ``L_q(p_y)`` where ``p_y > k``, the constant ``L_q(k)`` elsewhere (no gradient there, so
    samples the model finds implausible stop pulling it)."""
    _check_q(q)
    if not 0.0 < k < 1.0:
        raise ValueError(f"k must lie in (0, 1), got {k}")
    check_inputs(logits, target)
    p_y_q = _p_y_pow(logits, target, q)
    lq = (1 - p_y_q) / q
    return reduce(torch.where(p_y_q > k**q, lq, torch.full_like(lq, (1 - k**q) / q)), reduction)


def mae_loss(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error between p and the one-hot label: ``sum_k |p_k - 1[k = y]| = 2 (1 - p_y)``."""
    check_inputs(logits, target)
    return reduce(2 * (1 - _p_y(logits, target)), reduction)


def rce_loss(logits: Tensor, target: Tensor, log_zero: float = -4.0, reduction: str = "mean") -> Tensor:
    """Reverse cross-entropy ``-sum_k p_k log q_k`` with the one-hot label as q and ``log 0 := A``:
    ``= -A (1 - p_y)``."""
    check_inputs(logits, target)
    if log_zero >= 0:
        raise ValueError(f"log_zero (A) must be < 0, got {log_zero}")
    return reduce(-log_zero * (1 - _p_y(logits, target)), reduction)


def sce_loss(
    logits: Tensor, target: Tensor, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0, reduction="mean"
) -> Tensor:
    """Symmetric cross-entropy ``alpha CE + beta RCE``."""
    _check_nonnegative("alpha", alpha)
    _check_nonnegative("beta", beta)
    ce = F.cross_entropy(upcast(logits), target, reduction="none")
    return reduce(alpha * ce + beta * rce_loss(logits, target, log_zero, "none"), reduction)


def nce_loss(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Normalised CE ``(-log p_y) / (-sum_k log p_k)``."""
    check_inputs(logits, target)
    log_p = upcast(logits).log_softmax(1)
    return reduce(log_p.gather(1, target[:, None]).squeeze(1) / log_p.sum(1), reduction)


def nfl_loss(logits: Tensor, target: Tensor, gamma: float = 0.5, reduction: str = "mean") -> Tensor:
    """Normalised focal loss ``FL_y / sum_k FL_k`` with ``FL_k = -(1 - p_k)^gamma log p_k``."""
    _check_nonnegative("gamma", gamma)
    check_inputs(logits, target)
    log_p = upcast(logits).log_softmax(1)
    fl = -torch.exp(gamma * log1m_softmax(logits)) * log_p  # (1 - p)^gamma in log space: finite gradient at p = 1
    return reduce(fl.gather(1, target[:, None]).squeeze(1) / fl.sum(1), reduction)


def nce_rce_loss(logits, target, alpha: float = 1.0, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """APL: ``alpha NCE + beta RCE``."""
    return reduce(
        alpha * nce_loss(logits, target, "none") + beta * rce_loss(logits, target, reduction="none"), reduction
    )


def nfl_rce_loss(
    logits, target, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.5, reduction: str = "mean"
) -> Tensor:
    """APL: ``alpha NFL + beta RCE``."""
    nfl = nfl_loss(logits, target, gamma, "none")
    return reduce(alpha * nfl + beta * rce_loss(logits, target, reduction="none"), reduction)


def nce_mae_loss(logits, target, alpha: float = 1.0, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """APL: ``alpha NCE + beta MAE``."""
    return reduce(alpha * nce_loss(logits, target, "none") + beta * mae_loss(logits, target, "none"), reduction)


def bootstrap_soft_loss(logits: Tensor, target: Tensor, beta: float = 0.95, reduction: str = "mean") -> Tensor:
    """Soft bootstrapping ``-sum_k (beta t_k + (1 - beta) p_k) log p_k`` (the prediction term is part of the
    objective, as in the paper: it acts as entropy minimisation)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    check_inputs(logits, target)
    log_p = upcast(logits).log_softmax(1)
    t = F.one_hot(target, logits.shape[1]).to(log_p.dtype)
    return reduce(-((beta * t + (1 - beta) * log_p.exp()) * log_p).sum(1), reduction)


def bootstrap_hard_loss(logits: Tensor, target: Tensor, beta: float = 0.8, reduction: str = "mean") -> Tensor:
    """Hard bootstrapping ``-(beta log p_y + (1 - beta) log p_z)``, ``z = argmax_k p_k``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    check_inputs(logits, target)
    log_p = upcast(logits).log_softmax(1)
    z = log_p.argmax(1, keepdim=True)
    picked = beta * log_p.gather(1, target[:, None]) + (1 - beta) * log_p.gather(1, z)
    return reduce(-picked.squeeze(1), reduction)


def label_smoothing_loss(logits: Tensor, target: Tensor, smoothing: float = 0.1, reduction: str = "mean") -> Tensor:
    """CE against ``(1 - e) onehot + e / K``; ``e < 0`` is negative label smoothing (Wei et al. 2022)."""
    if not smoothing < 1.0:
        raise ValueError(f"smoothing must be < 1, got {smoothing}")
    check_inputs(logits, target)
    k = logits.shape[1]
    log_p = upcast(logits).log_softmax(1)
    t = (1 - smoothing) * F.one_hot(target, k).to(log_p.dtype) + smoothing / k
    return reduce(-(t * log_p).sum(1), reduction)


# --------------------------------------------------------------------------------------------------- modules
class _Loss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction


class GCE(_Loss):
    """Generalised cross-entropy (Zhang & Sabuncu 2018), q = 0.7."""

    def __init__(self, q: float = 0.7, reduction: str = "mean") -> None:
        super().__init__(reduction)
        _check_q(q)
        self.q = q

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return gce_loss(logits, target, self.q, self.reduction)


class TruncatedGCE(_Loss):
    """Truncated L_q (Zhang & Sabuncu 2018), q = 0.7, k = 0.5."""

    def __init__(self, q: float = 0.7, k: float = 0.5, reduction: str = "mean") -> None:
        super().__init__(reduction)
        _check_q(q)
        self.q, self.k = q, k

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return truncated_gce_loss(logits, target, self.q, self.k, self.reduction)


class MAE(_Loss):
    """Mean absolute error (Ghosh et al. 2017)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return mae_loss(logits, target, self.reduction)


class SCE(_Loss):
    """Symmetric cross-entropy (Wang et al. 2019): alpha 0.1, beta 1.0 (their CIFAR-10 setting), A = -4."""

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0, reduction: str = "mean"):
        super().__init__(reduction)
        _check_nonnegative("alpha", alpha)
        _check_nonnegative("beta", beta)
        self.alpha, self.beta, self.log_zero = alpha, beta, log_zero

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return sce_loss(logits, target, self.alpha, self.beta, self.log_zero, self.reduction)


class NCE(_Loss):
    """Normalised cross-entropy (Ma et al. 2020)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nce_loss(logits, target, self.reduction)


class NFL(_Loss):
    """Normalised focal loss (Ma et al. 2020), gamma 0.5."""

    def __init__(self, gamma: float = 0.5, reduction: str = "mean") -> None:
        super().__init__(reduction)
        _check_nonnegative("gamma", gamma)
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nfl_loss(logits, target, self.gamma, self.reduction)


class NCERCE(_Loss):
    """Active-passive loss NCE + RCE (Ma et al. 2020), alpha = beta = 1."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.alpha, self.beta = alpha, beta

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nce_rce_loss(logits, target, self.alpha, self.beta, self.reduction)


class NFLRCE(_Loss):
    """Active-passive loss NFL + RCE (Ma et al. 2020), alpha = beta = 1, gamma 0.5."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.5, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nfl_rce_loss(logits, target, self.alpha, self.beta, self.gamma, self.reduction)


class NCEMAE(_Loss):
    """Active-passive loss NCE + MAE (Ma et al. 2020), alpha = beta = 1."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.alpha, self.beta = alpha, beta

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nce_mae_loss(logits, target, self.alpha, self.beta, self.reduction)


class BootstrapSoft(_Loss):
    """Soft bootstrapping (Reed et al. 2015), beta 0.95."""

    def __init__(self, beta: float = 0.95, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return bootstrap_soft_loss(logits, target, self.beta, self.reduction)


class BootstrapHard(_Loss):
    """Hard bootstrapping (Reed et al. 2015), beta 0.8."""

    def __init__(self, beta: float = 0.8, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return bootstrap_hard_loss(logits, target, self.beta, self.reduction)


class LabelSmoothing(_Loss):
    """Label smoothing; a negative ``smoothing`` is negative label smoothing (Wei et al. 2022)."""

    def __init__(self, smoothing: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not smoothing < 1.0:
            raise ValueError(f"smoothing must be < 1, got {smoothing}")
        self.smoothing = smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return label_smoothing_loss(logits, target, self.smoothing, self.reduction)
