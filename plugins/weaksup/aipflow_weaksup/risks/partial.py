"""Learning from partial labels: each sample comes with a candidate set S (a 0/1 mask over K classes) that holds
its true class.

- CC (Feng et al., NeurIPS 2020, classifier-consistent): ``-log sum_{k in S} p_k``;
- PRODEN (Lv et al., ICML 2020) and RC (Feng et al. 2020, risk-consistent): ``-sum_k w_k log p_k`` with per-sample
  weights over S, uniform at first and re-estimated from the model, ``w_k = p_k 1[k in S] / sum_{j in S} p_j``
  (no gradient). PRODEN re-estimates them at every visit of a sample, RC once per epoch (``end_epoch()``).
  Both need each sample's index (aipflow's data modules give it).
- LWS (Wen et al., ICML 2021, leveraged weighted loss): one-vs-all binary losses on the logits f,
  ``sum_{k in S} w_k psi(f_k) + beta sum_{k not in S} w_k psi(-f_k)`` with the sigmoid loss
  ``psi(z) = sigmoid(-z)``; the weights are re-estimated like PRODEN's at every visit, within each part:
  ``w_k = p_k / sum_{j in S} p_j`` on S and ``p_k / sum_{j not in S} p_j`` off S (uniform in each part at first).
  ``leverage`` is beta (the paper's 1 or 2; default 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aipflow.losses import upcast
from aipflow.passes import in_extra_pass

KINDS = ("cc", "proden", "rc", "lws")


def _check(logits: Tensor, candidates: Tensor) -> None:
    if logits.ndim != 2 or candidates.shape != logits.shape:
        raise ValueError(
            f"logits and candidate sets must both be (N, K), got {tuple(logits.shape)} and {tuple(candidates.shape)}"
        )
    if bool((candidates.sum(1) == 0).any()):
        raise ValueError("every candidate set must hold at least one class (the true one); found an empty set")


def cc_loss(logits: Tensor, candidates: Tensor) -> Tensor:
    _check(logits, candidates)
    log_p = upcast(logits).log_softmax(1)
    return -torch.logsumexp(log_p.masked_fill(candidates == 0, float("-inf")), 1).mean()


class PartialLabelLoss(nn.Module):
    """``forward(logits, candidates, index=None)``; ``num_samples`` is needed for PRODEN / RC weights."""

    needs_index = True

    def __init__(self, kind: str = "proden", num_samples: int | None = None, leverage: float = 1.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if leverage < 0:
            raise ValueError(f"leverage (LWS's beta) must be >= 0, got {leverage}")
        self.kind, self.num_samples, self.leverage = kind, num_samples, leverage
        self.register_buffer("weights", torch.zeros(0))
        self.register_buffer("pending", torch.zeros(0))

    def _ensure(self, candidates: Tensor) -> None:
        if self.num_samples is None:
            raise ValueError("PRODEN/RC need num_samples (the training-set size) for their per-sample weights")
        shape = (self.num_samples, candidates.shape[1])
        if self.weights.shape != shape:
            self.weights = torch.zeros(shape, device=candidates.device)
            self.pending = torch.zeros(shape, device=candidates.device)

    def forward(self, logits: Tensor, candidates: Tensor, index: Tensor | None = None) -> Tensor:
        if self.kind == "cc":
            return cc_loss(logits, candidates)
        _check(logits, candidates)
        if index is None:
            raise ValueError(f"{self.kind} needs each sample's index: use a data module whose batches carry 'index'")
        self._ensure(candidates)
        mask = candidates.to(self.weights.dtype)
        fresh = self.weights[index].sum(1) == 0  # never seen (the weights are buffers: they survive checkpoints)
        if bool(fresh.any()):  # uniform over the candidate set (and, for LWS, over the rest) at first
            self.weights[index[fresh]] = _normalised_parts(
                torch.ones_like(mask[fresh]), mask[fresh], self.kind == "lws"
            )
        logits = upcast(logits)  # half precision is scored in fp32, as the core's losses
        log_p = logits.log_softmax(1)
        weights = self.weights[index].to(log_p.dtype)
        if self.kind == "lws":
            on = mask.to(logits.dtype)
            terms = on * torch.sigmoid(-logits) + self.leverage * (1 - on) * torch.sigmoid(logits)
            loss = (weights * terms).sum(1).mean()
        else:
            loss = -(weights * log_p).sum(1).mean()
        if self.training and not in_extra_pass():
            with torch.no_grad():
                new = _normalised_parts(log_p.exp().to(self.weights.dtype), mask, self.kind == "lws")
                if self.kind in ("proden", "lws"):
                    self.weights[index] = new
                else:
                    self.pending[index] = new
        return loss

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # the buffers are sized on first use: a fresh module takes the checkpoint's sizes (resuming, DDP results)
        for name in ("weights", "pending"):
            saved = state_dict.get(prefix + name)
            if saved is not None and getattr(self, name).shape != saved.shape:
                setattr(self, name, torch.zeros_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def end_epoch(self) -> None:
        """RC: adopt the weights estimated during the epoch."""
        if self.kind == "rc" and self.pending.numel():
            seen = self.pending.sum(1) > 0
            self.weights[seen] = self.pending[seen]


def _normalised_parts(values: Tensor, mask: Tensor, with_rest: bool) -> Tensor:
    """``values`` normalised to sum to one over each row's candidate set (and over the rest with ``with_rest``;
    a row whose rest is empty keeps zeros there)."""
    on = values * mask
    out = on / on.sum(1, keepdim=True)
    if with_rest:
        off = values * (1 - mask)
        out = out + off / off.sum(1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
    return out
