"""Tensor-train Linear layers (Novikov et al., "Tensorizing Neural Networks", NeurIPS 2015): the weight
``W (M x N)`` with ``M = m_1 ... m_d`` and ``N = n_1 ... n_d`` is held as ``d`` cores ``G_k (r_{k-1} x m_k x n_k x
r_k)`` (``r_0 = r_d = 1``) with ``W[(i_1..i_d), (j_1..j_d)] = G_1[i_1, j_1] G_2[i_2, j_2] ... G_d[i_d, j_d]``, and
the layer contracts the input with the cores one by one, never forming ``W``.

The cores come from TT-SVD (Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 2011): sequential
truncated SVDs in float64, each cut where the discarded singular values' energy is at most
``(epsilon ||W||_F)^2 / (d - 1)``, so that ``||W - W_TT||_F <= epsilon ||W||_F``; ``max_rank`` caps every rank.
The factorisations of ``M`` and ``N`` are given, or the prime factors are dealt into ``d`` near-equal parts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aipflow_compress._layers import replace_layer, select_layers

__all__ = ["TTLinear", "factor_dimension", "tensor_train_linears", "tt_svd"]


def factor_dimension(size: int, parts: int) -> list[int]:
    """``size`` as ``parts`` factors, the prime factors dealt largest first to the smallest part (sorted)."""
    primes, rest, p = [], size, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    factors = [1] * parts
    for prime in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= prime
    return sorted(factors)


def tt_svd(
    weight: torch.Tensor, out_factors: list[int], in_factors: list[int], epsilon: float, max_rank: int | None
) -> list[torch.Tensor]:
    """The TT cores ``(r_{k-1}, m_k, n_k, r_k)`` of ``weight`` (float64)."""
    d = len(out_factors)
    w = weight.double().reshape(*out_factors, *in_factors)
    # interleave the modes: (m_1, n_1, m_2, n_2, ...)
    w = w.permute(*[i for k in range(d) for i in (k, d + k)])
    norm = float(weight.double().norm())
    threshold = (epsilon * norm) ** 2 / max(d - 1, 1)
    cores, rank, rest = [], 1, w.reshape(-1)
    for k in range(d - 1):
        matrix = rest.reshape(rank * out_factors[k] * in_factors[k], -1)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        tail = torch.cumsum((s**2).flip(0), 0).flip(0)  # tail[i]: energy of s[i:]
        keep = int((tail > threshold).sum()) if epsilon > 0 else len(s)
        keep = max(1, min(keep, max_rank or keep))
        cores.append(u[:, :keep].reshape(rank, out_factors[k], in_factors[k], keep))
        rest = s[:keep, None] * vh[:keep]
        rank = keep
    cores.append(rest.reshape(rank, out_factors[-1], in_factors[-1], 1))
    return cores


class TTLinear(nn.Module):
    """A Linear layer in tensor-train form: ``cores`` (a ParameterList) and ``bias``."""

    def __init__(self, cores: list[torch.Tensor], bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_factors = [int(c.shape[1]) for c in cores]
        self.in_factors = [int(c.shape[2]) for c in cores]
        self.out_features, self.in_features = math.prod(self.out_factors), math.prod(self.in_factors)
        self.ranks = [int(c.shape[3]) for c in cores[:-1]]
        self.cores = nn.ParameterList([nn.Parameter(c) for c in cores])
        self.bias = nn.Parameter(bias) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        batch = math.prod(lead) if lead else 1
        # state (P, r, n_k, Q): P the batch and the output modes done, Q the input modes to come
        state = x.reshape(batch, 1, self.in_factors[0], -1)
        for k, core in enumerate(self.cores):
            state = torch.einsum("prnq,rmns->pmsq", state, core.to(state.dtype))
            p, m, s, q = state.shape
            following = self.in_factors[k + 1] if k + 1 < len(self.cores) else 1
            state = state.reshape(p * m, s, following, q // following)
        out = state.reshape(*lead, self.out_features)
        return out + self.bias if self.bias is not None else out

    def weight_matrix(self) -> torch.Tensor:
        """``W`` rebuilt from the cores (for checks; the forward pass never forms it)."""
        return self(torch.eye(self.in_features, dtype=self.cores[0].dtype)).T - (
            self.bias[:, None] if self.bias is not None else 0
        )


@torch.no_grad()
def tensor_train_linears(
    model: nn.Module,
    epsilon: float = 0.1,
    max_rank: int | None = None,
    cores: int = 3,
    include: str | None = None,
    exclude: str | None = None,
) -> dict[str, dict]:
    """Replace ``model``'s Linear layers by TT layers of ``cores`` cores where that saves weights; per layer the
    TT ranks, the weights before and after and the relative error of the weight."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"tensor_train.epsilon must lie in [0, 1), got {epsilon}")
    if cores < 2:
        raise ValueError(f"tensor_train.cores must be >= 2, got {cores}")
    report = {}
    for name, linear in select_layers(model, (nn.Linear,), include, exclude, "tensor_train", exact_type=True).items():
        out_factors = factor_dimension(linear.out_features, cores)
        in_factors = factor_dimension(linear.in_features, cores)
        factors = tt_svd(linear.weight, out_factors, in_factors, epsilon, max_rank)
        layer = TTLinear(factors, None if linear.bias is None else linear.bias.detach().double())
        layer.to(dtype=linear.weight.dtype, device=linear.weight.device)
        before = linear.weight.numel()
        after = sum(c.numel() for c in layer.cores)
        error = float((layer.weight_matrix().double() - linear.weight.double()).norm() / linear.weight.double().norm())
        entry = {"ranks": layer.ranks, "weights_before": before, "weights_after": min(after, before)}
        entry.update(relative_error=error, replaced=after < before)
        if after < before:
            replace_layer(model, name, layer)
        report[name] = entry
    return report
