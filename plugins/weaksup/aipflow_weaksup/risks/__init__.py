from aipflow_weaksup.risks.binary import SETTINGS as BINARY_SETTINGS
from aipflow_weaksup.risks.binary import BinaryWeakRisk, binary_weak_risk
from aipflow_weaksup.risks.pairs import pcomp_risk, sd_risk, su_risk
from aipflow_weaksup.risks.pu import PNRisk, PURisk, pn_risk, pnu_risk, pu_risk
from aipflow_weaksup.risks.surrogates import SURROGATES, surrogate
from aipflow_weaksup.risks.uu import pconf_risk, uu_risk

__all__ = [
    "BINARY_SETTINGS",
    "BinaryWeakRisk",
    "binary_weak_risk",
    "PNRisk",
    "PURisk",
    "SURROGATES",
    "pn_risk",
    "pnu_risk",
    "pconf_risk",
    "pcomp_risk",
    "pu_risk",
    "sd_risk",
    "su_risk",
    "surrogate",
    "uu_risk",
]
