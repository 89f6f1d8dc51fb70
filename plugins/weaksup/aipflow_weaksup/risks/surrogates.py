"""Binary surrogate losses ``l(z, t)`` of a margin ``z = g(x)`` for a label ``t`` in {+1, -1}.

- sigmoid: ``sigmoid(-t z)`` (bounded; the nnPU paper's choice);
- logistic: ``log(1 + exp(-t z))``;
- squared: ``(t z - 1)^2 / 4`` (du Plessis et al. 2015's convex PU choice);
- zero_one: ``1[t z <= 0]`` (for reporting only: no gradient).

Half-precision margins are scored in fp32 (the core's ``upcast``): a risk averages and subtracts losses that, at
fp16 margins of 3e4, overflow fp16 (mean -> inf, inf - inf -> NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from aipflow.losses import upcast


def _sigmoid(z: Tensor, t: float) -> Tensor:
    return torch.sigmoid(-t * z)


def _logistic(z: Tensor, t: float) -> Tensor:
    return F.softplus(-t * z)


def _squared(z: Tensor, t: float) -> Tensor:
    return (t * z - 1) ** 2 / 4


def _zero_one(z: Tensor, t: float) -> Tensor:
    return (t * z <= 0).to(z.dtype)


SURROGATES = {"sigmoid": _sigmoid, "logistic": _logistic, "squared": _squared, "zero_one": _zero_one}


def surrogate(name: str):
    if name not in SURROGATES:
        raise ValueError(f"loss must be one of {sorted(SURROGATES)}, got {name!r}")
    loss = SURROGATES[name]
    return lambda z, t: loss(upcast(z), t)
