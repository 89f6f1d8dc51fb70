"""Risks from two unlabelled sets (UU) and from positive-confidence data (Pconf).

UU (Lu et al., ICLR 2019): sets U (class prior theta) and U' (theta' < theta) and the test prior pi:

    R = E_U[ a l(g,+1) - b l(g,-1) ] + E_U'[ -c l(g,+1) + d l(g,-1) ],
    a = (1 - theta') pi / (theta - theta'),   b = theta' (1 - pi) / (theta - theta'),
    c = (1 - theta) pi / (theta - theta'),    d = theta (1 - pi) / (theta - theta').

(theta = 1, theta' = 0 gives the PN risk; theta = 1, theta' = pi gives uPU.) nnUU (Lu et al., AISTATS 2020)
keeps the positive part ``a E_U l(g,+1) - c E_U' l(g,+1)`` and the negative part
``d E_U' l(g,-1) - b E_U l(g,-1)`` non-negative with a correction function: ``"relu"`` or ``"abs"``.

Pconf (Ishida et al., NeurIPS 2018): positives only, each with its confidence r = p(y = +1 | x):
``R = pi E_P[ l(g,+1) + (1 - r) / r l(g,-1) ]``.
"""

from __future__ import annotations

from torch import Tensor

from aipflow_weaksup.risks._correction import check_correction, corrected_sum
from aipflow_weaksup.risks.pu import RiskResult, check_prior
from aipflow_weaksup.risks.surrogates import surrogate


def uu_risk(
    scores_u: Tensor,
    scores_u2: Tensor,
    theta: float,
    theta2: float,
    prior: float,
    loss: str = "sigmoid",
    correction: str = "none",
) -> RiskResult:
    prior = check_prior(prior)
    if not 0.0 <= theta2 < theta <= 1.0:
        raise ValueError(f"UU needs 0 <= theta' < theta <= 1 (two different class priors), got {theta}, {theta2}")
    check_correction(correction)
    if scores_u.numel() == 0 or scores_u2.numel() == 0:
        raise ValueError("UU needs both unlabelled sets to be non-empty")
    ell = surrogate(loss)
    gap = theta - theta2
    a, b = (1 - theta2) * prior / gap, theta2 * (1 - prior) / gap
    c, d = (1 - theta) * prior / gap, theta * (1 - prior) / gap
    positive = a * ell(scores_u, +1.0).mean() - c * ell(scores_u2, +1.0).mean()
    negative = d * ell(scores_u2, -1.0).mean() - b * ell(scores_u, -1.0).mean()
    risk = corrected_sum(positive, negative, correction)
    return RiskResult(risk, risk, positive, negative)


def pconf_risk(scores: Tensor, confidence: Tensor, prior: float, loss: str = "sigmoid") -> RiskResult:
    prior = check_prior(prior)
    if confidence.shape != scores.shape:
        raise ValueError(f"confidence must match scores' shape {tuple(scores.shape)}, got {tuple(confidence.shape)}")
    if bool(((confidence <= 0) | (confidence > 1)).any()):
        raise ValueError("positive confidences r(x) must lie in (0, 1]")
    ell = surrogate(loss)
    positive = prior * ell(scores, +1.0).mean()
    negative = prior * ((1 - confidence) / confidence * ell(scores, -1.0)).mean()
    risk = positive + negative
    return RiskResult(risk, risk, positive, negative)
