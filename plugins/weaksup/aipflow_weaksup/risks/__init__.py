from aipflow_weaksup.risks.pu import PNRisk, PURisk, pn_risk, pnu_risk, pu_risk
from aipflow_weaksup.risks.surrogates import SURROGATES, surrogate

__all__ = ["PNRisk", "PURisk", "SURROGATES", "pn_risk", "pnu_risk", "pu_risk", "surrogate"]
