"""Risk estimators from positive and unlabeled data (and the supervised PN risk they approximate).

Notation: scores ``z = g(x)`` (margins), class prior ``pi = p(y = +1)``, surrogate ``l(z, t)``;
``R_P^+ = E_P[l(z, +1)]``, ``R_P^- = E_P[l(z, -1)]``, ``R_U^- = E_U[l(z, -1)]``.

- uPU (du Plessis et al., NeurIPS 2014 / ICML 2015): ``pi R_P^+ + R_U^- - pi R_P^-`` (unbiased);
- nnPU (Kiryo et al., NeurIPS 2017): ``pi R_P^+ + max(0, R_U^- - pi R_P^-)``. When the negative part
  ``R_U^- - pi R_P^-`` falls below ``-beta`` the optimised objective follows one of three published
  conventions (``convention``):
  ``"paper"``: Algorithm 1, a gradient-ascent step on the negative part, objective ``-gamma (R_U^- - pi R_P^-)``;
  ``"max"``: the plain non-negative risk ``pi R_P^+ + max(0, R_U^- - pi R_P^-)`` (no ascent);
  ``"whole"``: ascent on the whole unbiased risk, ``-gamma (pi R_P^+ + R_U^- - pi R_P^-)``.
  Defaults beta = 0, gamma = 1 (the paper's);
- absPU: ``pi R_P^+ + |R_U^- - pi R_P^-|``;
- PNU (Sakai et al., ICML 2017): for eta in [0, 1], ``(1 - eta) R_PN + eta R_PU``; for eta in [-1, 0),
  ``(1 + eta) R_PN - eta R_NU`` with ``R_NU = (1 - pi) R_N^- + R_U^+ - (1 - pi) R_N^+``;
- PN: ``pi R_P^+ + (1 - pi) R_N^-``.

Every function returns a :class:`RiskResult` with the objective to minimise and the risk to report.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from aipflow_weaksup.risks.surrogates import surrogate

ESTIMATORS = ("upu", "nnpu", "abspu")
CONVENTIONS = ("paper", "max", "whole")


@dataclass
class RiskResult:
    objective: Tensor  # what to minimise (may differ from the risk for nnPU's ascent step)
    risk: Tensor  # the estimator's value, to report
    positive: Tensor  # pi R_P^+
    negative: Tensor  # R_U^- - pi R_P^- (the part nnPU keeps non-negative)


def check_prior(prior: float) -> float:
    if not 0.0 < float(prior) < 1.0:
        raise ValueError(f"prior (class prior pi) must lie in (0, 1), got {prior}")
    return float(prior)


def check_options(estimator: str, convention: str, beta: float, gamma: float) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if beta < 0 or gamma <= 0:
        raise ValueError(f"nnPU needs beta >= 0 and gamma > 0, got beta={beta}, gamma={gamma}")


def as_margins(scores: Tensor, labels: Tensor, what: str = "labels") -> Tensor:
    """``scores`` (N,) or (N, 1) as a vector, checked against per-row ``labels`` (N,)."""
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores.squeeze(1)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"scores must be (N,) or (N, 1) and {what} (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    return scores


def _split(scores: Tensor, labels: Tensor, value: int, what: str) -> Tensor:
    scores = as_margins(scores, labels)
    part = scores[labels == value]
    if part.numel() == 0:
        raise ValueError(f"the batch has no {what}; sample batches that hold both (stratified batches)")
    return part


def pu_risk(
    scores: Tensor,
    labels: Tensor,
    prior: float,
    loss: str = "sigmoid",
    estimator: str = "nnpu",
    beta: float = 0.0,
    gamma: float = 1.0,
    convention: str = "paper",
) -> RiskResult:
    """PU risk of margins ``scores`` with ``labels`` 1 (labelled positive) or 0 (unlabelled)."""
    prior = check_prior(prior)
    check_options(estimator, convention, beta, gamma)
    ell = surrogate(loss)
    p = _split(scores, labels, 1, "labelled positives")
    u = _split(scores, labels, 0, "unlabelled samples")
    positive = prior * ell(p, +1.0).mean()
    negative = ell(u, -1.0).mean() - prior * ell(p, -1.0).mean()
    if estimator == "upu":
        risk = positive + negative
        return RiskResult(risk, risk, positive, negative)
    if estimator == "abspu":
        risk = positive + negative.abs()
        return RiskResult(risk, risk, positive, negative)
    risk = positive + negative.clamp_min(0)
    if convention == "max":
        return RiskResult(risk, risk, positive, negative)
    if bool(negative < -beta):
        objective = -gamma * negative if convention == "paper" else -gamma * (positive + negative)
    else:
        objective = positive + negative
    return RiskResult(objective, risk.detach(), positive, negative)


def pn_risk(scores: Tensor, labels: Tensor, prior: float, loss: str = "sigmoid") -> RiskResult:
    """Supervised risk with labels +1 / -1, class-prior weighted: ``pi R_P^+ + (1 - pi) R_N^-``."""
    prior = check_prior(prior)
    ell = surrogate(loss)
    p = _split(scores, labels, 1, "positives")
    n = _split(scores, labels, -1, "negatives")
    positive = prior * ell(p, +1.0).mean()
    negative = (1 - prior) * ell(n, -1.0).mean()
    risk = positive + negative
    return RiskResult(risk, risk, positive, negative)


def pnu_risk(scores: Tensor, labels: Tensor, prior: float, eta: float, loss: str = "sigmoid") -> RiskResult:
    """PNU risk (Sakai et al. 2017), labels +1 / -1 (labelled) and 0 (unlabelled), eta in [-1, 1]."""
    prior = check_prior(prior)
    if not -1.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [-1, 1], got {eta}")
    ell = surrogate(loss)
    pn = pn_risk(scores[labels != 0], labels[labels != 0], prior, loss).risk
    p = _split(scores, labels, 1, "labelled positives")
    n = _split(scores, labels, -1, "labelled negatives")
    u = _split(scores, labels, 0, "unlabelled samples")
    if eta >= 0:
        other = prior * ell(p, +1.0).mean() + ell(u, -1.0).mean() - prior * ell(p, -1.0).mean()
        risk = (1 - eta) * pn + eta * other
    else:
        other = (1 - prior) * ell(n, -1.0).mean() + ell(u, +1.0).mean() - (1 - prior) * ell(n, +1.0).mean()
        risk = (1 + eta) * pn - eta * other
    return RiskResult(risk, risk, pn, other)


class PURisk(nn.Module):
    """PU risk estimator as a loss module: ``forward(scores, labels)`` returns the objective; the last
    :class:`RiskResult` is kept in ``last`` for logging (reported risk vs optimised objective)."""

    def __init__(
        self,
        prior: float | str | None = None,
        estimator: str = "nnpu",
        loss: str = "sigmoid",
        beta: float = 0.0,
        gamma: float = 1.0,
        convention: str = "paper",
    ) -> None:
        super().__init__()
        if isinstance(prior, str) and prior != "auto":
            raise ValueError(f"risk.prior must be a number in (0, 1), 'auto' or null, got {prior!r}")
        self.auto_prior = prior == "auto"  # estimated by the task before training (its prior_estimator, KM2 default)
        # None: the task reads it from the data
        self.prior = None if prior is None or self.auto_prior else check_prior(prior)
        check_options(estimator, convention, beta, gamma)
        surrogate(loss)
        self.estimator, self.loss, self.beta, self.gamma, self.convention = estimator, loss, beta, gamma, convention
        self.last: RiskResult | None = None

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        if self.prior is None:
            raise ValueError("PURisk needs the class prior: set prior, or use a data module that records it")
        self.last = pu_risk(
            scores, labels, self.prior, self.loss, self.estimator, self.beta, self.gamma, self.convention
        )
        return self.last.objective


class PNRisk(nn.Module):
    """Supervised PN risk (labels +1 / -1) with the same surrogates, for the fully supervised baseline."""

    def __init__(self, prior: float | None = None, loss: str = "sigmoid") -> None:
        super().__init__()
        self.prior = None if prior is None else check_prior(prior)  # None: the task reads it from the data
        surrogate(loss)
        self.loss = loss

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        if self.prior is None:
            raise ValueError("PNRisk needs the class prior: set prior, or use a data module that records it")
        return pn_risk(scores, labels, self.prior, self.loss).objective


__all__ = ["CONVENTIONS", "ESTIMATORS", "PNRisk", "PURisk", "RiskResult", "pn_risk", "pnu_risk", "pu_risk"]
