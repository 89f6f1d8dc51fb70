"""Risks from pairwise similarity: SU (similar pairs + unlabelled; Bao et al., ICML 2018) and SD (similar +
dissimilar pairs; Shimada et al. 2019). Pairs are pooled pointwise: the points of similar pairs follow
``p_S(x) = (pi+^2 p+(x) + pi-^2 p-(x)) / pi_S`` with ``pi_S = pi+^2 + pi-^2``; those of dissimilar pairs follow
``p_D(x) = (p+(x) + p-(x)) / 2``. Solving for ``pi+ p+`` and ``pi- p-`` and substituting into the PN risk gives
(with ``l+ = l(g, +1)``, ``l- = l(g, -1)``, ``pi+ != 1/2``):

    SU:  R = pi_S E_S[(l+ - l-) / (pi+ - pi-)] + E_U[(pi+ l- - pi- l+) / (pi+ - pi-)]
    SD:  R = pi_S / (pi+ - pi-) E_S[pi+ l+ - pi- l-] + 2 pi+ pi- / (pi+ - pi-) E_D[pi+ l- - pi- l+]

Pcomp (Feng et al., ICML 2021): pairs (x, x') in which x is at least as likely positive as x' (every pair but
(negative, positive)); solving the two pointwise marginals for ``pi+ p+`` and ``pi- p-`` gives

    R = E_x[l+ - pi+ l-] + E_x'[l- - pi- l+],

whose positive part ``E_x[l+] - pi- E_x'[l+]`` and negative part ``E_x'[l-] - pi+ E_x[l-]`` can go below zero
on a sample; ``correction`` ``"relu"`` or ``"abs"`` keeps each non-negative (the paper's corrected estimators).

All are unbiased estimators of the PN risk (checked by simulation in the tests).
"""

from __future__ import annotations

from torch import Tensor

from aipflow_weaksup.risks._correction import check_correction, corrected_sum
from aipflow_weaksup.risks.pu import RiskResult, check_prior
from aipflow_weaksup.risks.surrogates import surrogate


def _priors(prior: float) -> tuple[float, float, float]:
    prior = check_prior(prior)
    if abs(prior - 0.5) < 1e-6:
        raise ValueError("SU/SD need a class prior different from 0.5 (the classes are not identifiable at 0.5)")
    return prior, 1 - prior, prior**2 + (1 - prior) ** 2


def su_risk(scores_similar: Tensor, scores_unlabeled: Tensor, prior: float, loss: str = "sigmoid") -> RiskResult:
    """``scores_similar``: the margins of all points of the similar pairs (2 per pair)."""
    pp, pn, ps = _priors(prior)
    if scores_similar.numel() == 0 or scores_unlabeled.numel() == 0:
        raise ValueError("SU needs similar pairs and unlabelled points")
    ell = surrogate(loss)
    s, u = scores_similar, scores_unlabeled
    similar = ps * ((ell(s, +1.0) - ell(s, -1.0)) / (pp - pn)).mean()
    unlabeled = ((pp * ell(u, -1.0) - pn * ell(u, +1.0)) / (pp - pn)).mean()
    risk = similar + unlabeled
    return RiskResult(risk, risk, similar, unlabeled)


def sd_risk(scores_similar: Tensor, scores_dissimilar: Tensor, prior: float, loss: str = "sigmoid") -> RiskResult:
    """Margins of all points of the similar and of the dissimilar pairs."""
    pp, pn, ps = _priors(prior)
    if scores_similar.numel() == 0 or scores_dissimilar.numel() == 0:
        raise ValueError("SD needs similar and dissimilar pairs")
    ell = surrogate(loss)
    s, d = scores_similar, scores_dissimilar
    similar = ps / (pp - pn) * (pp * ell(s, +1.0) - pn * ell(s, -1.0)).mean()
    dissimilar = 2 * pp * pn / (pp - pn) * (pp * ell(d, -1.0) - pn * ell(d, +1.0)).mean()
    risk = similar + dissimilar
    return RiskResult(risk, risk, similar, dissimilar)


def pcomp_risk(
    scores_first: Tensor, scores_second: Tensor, prior: float, loss: str = "sigmoid", correction: str = "none"
) -> RiskResult:
    """Margins of the first (more likely positive) and second elements of the pairs."""
    pp = check_prior(prior)
    pn = 1 - pp
    check_correction(correction)
    if scores_first.numel() == 0 or scores_second.numel() == 0:
        raise ValueError("Pcomp needs pairs")
    ell = surrogate(loss)
    x, x2 = scores_first, scores_second
    positive = ell(x, +1.0).mean() - pn * ell(x2, +1.0).mean()
    negative = ell(x2, -1.0).mean() - pp * ell(x, -1.0).mean()
    risk = corrected_sum(positive, negative, correction)
    return RiskResult(risk, risk, positive, negative)
