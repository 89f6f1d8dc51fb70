"""One loss module for the binary weak-label settings other than PU, over pooled batches.

Each row of a batch carries a ``group`` code saying which weak sample it belongs to:

====== ============================================ ===========================================
setting  groups                                       estimator (``aipflow_weaksup.risks``)
====== ============================================ ===========================================
pnu    +1 labelled positive, -1 labelled negative,   ``pnu_risk`` (Sakai et al. 2017), ``eta``
       0 unlabelled
uu     0 the set with prior theta, 1 the set with    ``uu_risk`` (Lu et al. 2019); ``correction``
       prior theta' (< theta)                        relu / abs: nnUU (Lu et al. 2020)
su     1 points of similar pairs, 0 unlabelled       ``su_risk`` (Bao et al. 2018)
sd     1 points of similar pairs, 2 of dissimilar    ``sd_risk`` (Shimada et al. 2019)
pcomp  1 first (more likely positive) elements,      ``pcomp_risk`` (Feng et al. 2021); relu / abs
       2 second elements
pconf  every row positive, with ``confidence``       ``pconf_risk`` (Ishida et al. 2018)
====== ============================================ ===========================================
"""

from __future__ import annotations

from torch import Tensor, nn

from aipflow_weaksup.risks._correction import check_correction
from aipflow_weaksup.risks.pairs import pcomp_risk, sd_risk, su_risk
from aipflow_weaksup.risks.pu import RiskResult, as_margins, check_prior, pnu_risk
from aipflow_weaksup.risks.surrogates import surrogate
from aipflow_weaksup.risks.uu import pconf_risk, uu_risk

SETTINGS = ("pnu", "uu", "su", "sd", "pcomp", "pconf")
CORRECTED = ("uu", "pcomp")  # the settings whose estimator has non-negative corrections


def binary_weak_risk(
    setting: str,
    scores: Tensor,
    group: Tensor,
    prior: float,
    loss: str = "sigmoid",
    correction: str = "none",
    eta: float = 0.0,
    theta: float | None = None,
    theta2: float | None = None,
    confidence: Tensor | None = None,
) -> RiskResult:
    """The ``setting``'s estimator on one pooled batch (see the module docstring for the group codes)."""
    scores = as_margins(scores, group, "group")
    if setting == "pnu":
        return pnu_risk(scores, group, prior, eta, loss)
    if setting == "uu":
        if theta is None or theta2 is None:
            raise ValueError("UU needs theta and theta2 (the two sets' class priors): set them or use a data module")
        return uu_risk(scores[group == 0], scores[group == 1], theta, theta2, prior, loss, correction)
    if setting == "su":
        return su_risk(scores[group == 1], scores[group == 0], prior, loss)
    if setting == "sd":
        return sd_risk(scores[group == 1], scores[group == 2], prior, loss)
    if setting == "pcomp":
        return pcomp_risk(scores[group == 1], scores[group == 2], prior, loss, correction)
    if setting == "pconf":
        if confidence is None:
            raise ValueError("Pconf needs each positive's confidence r(x): the batch has no 'confidence'")
        return pconf_risk(scores, confidence.to(scores.dtype), prior, loss)
    raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")


class BinaryWeakRisk(nn.Module):
    """``forward(scores, group, confidence=None)`` returns the objective; ``last`` keeps the
    :class:`RiskResult`. ``prior``, ``theta`` and ``theta2`` left unset are read from the data module."""

    def __init__(
        self,
        setting: str = "uu",
        prior: float | None = None,
        loss: str = "sigmoid",
        correction: str = "none",
        eta: float = 0.0,
        theta: float | None = None,
        theta2: float | None = None,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"risk.setting must be one of {SETTINGS}, got {setting!r}")
        check_correction(correction)
        if correction != "none" and setting not in CORRECTED:
            raise ValueError(f"risk.correction={correction!r} applies to {CORRECTED} only, not {setting!r}")
        if not -1.0 <= eta <= 1.0:
            raise ValueError(f"risk.eta must lie in [-1, 1], got {eta}")
        surrogate(loss)
        self.setting, self.loss, self.correction, self.eta = setting, loss, correction, eta
        self.prior = None if prior is None else check_prior(prior)
        self.theta, self.theta2 = theta, theta2
        self.last: RiskResult | None = None

    def evaluate(self, scores: Tensor, group: Tensor, confidence: Tensor | None = None, **override) -> RiskResult:
        """The estimator with this module's options, any of them overridden (e.g. ``loss="zero_one"``)."""
        prior = override.pop("prior", self.prior)
        if prior is None:
            raise ValueError("BinaryWeakRisk needs the class prior: set prior, or use a data module that records it")
        options = dict(loss=self.loss, correction=self.correction, eta=self.eta, theta=self.theta, theta2=self.theta2)
        options.update(override)
        return binary_weak_risk(self.setting, scores, group, prior, confidence=confidence, **options)

    def forward(self, scores: Tensor, group: Tensor, confidence: Tensor | None = None) -> Tensor:
        self.last = self.evaluate(scores, group, confidence)
        return self.last.objective
