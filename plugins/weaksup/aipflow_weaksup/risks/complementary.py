"""Learning from complementary labels: each sample comes with a class ``c`` it does *not* belong to.

With ``p = softmax(logits)``, K classes and ``l(f(x), k) = -log p_k`` (cross-entropy):

- SCL-NL (Chou et al., ICML 2020): ``-log(1 - p_c)``; SCL-EXP (same paper): ``exp(p_c)``;
- PC (Ishida et al., NeurIPS 2017): ``sum_{k != c} sigmoid(-(g_k - g_c))`` on the logits g;
- forward (Yu et al., ECCV 2018): ``-log (p^T Q)_c`` with ``Q[y, c] = p(c | y)``: ``(1 - I) / (K - 1)`` for
  uniform complementary labels, or a given ``transition`` for biased ones (zero diagonal, rows summing to one);
- the unbiased estimator (Ishida et al., ICML 2019): ``R = sum_k A_k``,
  ``A_k = mean_i l(f(x_i), k) - (K - 1) / n sum_{i: c_i = k} l(f(x_i), k)`` (each A_k estimates a class's
  share of the ordinary risk, so it should be >= 0). ``correction``: ``"free"`` (as is), ``"max"``
  (``sum_k max(0, A_k)``) or ``"ga"`` (gradient ascent on the negative A_k when any is negative).
  Given the complementary labels' class prior ``pbar_j = p(c = j)`` (``complementary_prior``; the data modules
  record it), the stratified form ``A_k = sum_j pbar_j mean_{i: c_i = j} l_ik - (K - 1) pbar_k mean_{i: c_i = k}
  l_ik`` (classes absent from the batch left out) replaces the batch's own label counts by pbar: a batch whose
  counts drift from pbar no longer makes A_k negative by chance, which otherwise sends the gradient-ascent
  correction into ascent at almost every step (it then learns to predict the complementary labels).

Multiple complementary labels (Feng et al., ICML 2020): each sample comes with a set ``Ybar`` of ``d`` classes it
does not belong to (``1 <= d <= K - 1``; a multi-hot ``(N, K)`` mask):

- the unbiased estimator: ``mean_i [sum_{k not in Ybar_i} l_ik - (K - 1 - d_i) / d_i sum_{k in Ybar_i} l_ik]``
  (for sets drawn uniformly among those of size d that avoid the true class, its expectation is the ordinary
  risk; with d = 1 it is Ishida et al.'s), written per class as ``A_k = mean_i l_ik (1 - (K - 1) m_ik / d_i)``
  so that the same ``correction`` applies;
- the upper-bound surrogates: ``ub_exp = exp(-sum_{j not in Ybar} p_j)`` and ``ub_log = -log sum_{j not in
  Ybar} p_j``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aipflow.losses import forward_corrected_loss, log1m_softmax, upcast

KINDS = ("scl_nl", "scl_exp", "pc", "forward", "unbiased", "ub_exp", "ub_log")
MULTIPLE_KINDS = ("unbiased", "ub_exp", "ub_log")
CORRECTIONS = ("free", "max", "ga")


def _check(logits: Tensor, comp: Tensor) -> None:
    if logits.ndim != 2 or comp.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (N, K) and complementary labels (N,), got {tuple(logits.shape)}, {tuple(comp.shape)}"
        )
    k = logits.shape[1]
    if k < 2:
        raise ValueError("complementary labels need at least 2 classes (with one class every label is the only class)")
    if comp.numel() and (int(comp.min()) < 0 or int(comp.max()) >= k):
        raise ValueError(f"complementary labels must lie in [0, {k - 1}], got [{int(comp.min())}, {int(comp.max())}]")


def check_complementary_prior(prior, k: int) -> Tensor:
    p = torch.as_tensor(prior, dtype=torch.float64)
    if p.shape != (k,) or bool((p < 0).any()) or abs(float(p.sum()) - 1) > 1e-6:
        raise ValueError(f"complementary_prior must be {k} non-negative class probabilities summing to 1, got {prior}")
    return p


def check_transition(transition, k: int) -> Tensor:
    """A complementary-label transition matrix: (K, K), non-negative, zero diagonal, rows summing to one."""
    q = torch.as_tensor(transition, dtype=torch.float64)
    if q.shape != (k, k):
        raise ValueError(f"transition must be a ({k}, {k}) matrix p(complementary | true), got {tuple(q.shape)}")
    if bool((q < 0).any()) or not torch.allclose(q.sum(1), torch.ones(k, dtype=q.dtype), atol=1e-6):
        raise ValueError("transition rows must be probability vectors (non-negative, summing to 1)")
    if bool((q.diagonal() != 0).any()):
        raise ValueError("transition must have a zero diagonal: a complementary label is never the true class")
    return q


def complementary_loss(
    logits: Tensor,
    comp: Tensor,
    kind: str = "scl_nl",
    correction: str = "free",
    transition=None,
    complementary_prior=None,
) -> tuple[Tensor, Tensor]:
    """``(objective, risk)`` for complementary labels ``comp``: class indices ``(N,)``, or a multi-hot ``(N, K)``
    mask of several complementary labels per sample (kinds ``unbiased``, ``ub_exp``, ``ub_log``). Objective and
    risk differ only for the corrected estimators."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if comp.ndim == 2 or kind in ("ub_exp", "ub_log"):
        return multiple_complementary_loss(logits, comp, kind, correction)
    _check(logits, comp)
    logits = upcast(logits)  # half precision is scored in fp32: per-class sums of ~1e4 losses overflow fp16
    k = logits.shape[1]
    log_p = logits.log_softmax(1)
    p_c = log_p.exp().gather(1, comp[:, None]).squeeze(1)
    if kind == "scl_nl":
        # -log(1 - p_c) in log space: exact where p_c rounds to 1 (a clamp at 1 - 1e-7 is 1 in fp16 / bf16)
        value = -log1m_softmax(logits).gather(1, comp[:, None]).mean()
    elif kind == "scl_exp":
        value = p_c.exp().mean()
    elif kind == "pc":
        g_c = logits.gather(1, comp[:, None])
        terms = torch.sigmoid(-(logits - g_c))
        value = (terms.sum(1) - 0.5).mean()  # drop k = c, whose term is sigmoid(0) = 0.5
    elif kind == "forward":
        if transition is None:
            q = (torch.ones(k, k, dtype=logits.dtype) - torch.eye(k, dtype=logits.dtype)) / (k - 1)
        else:
            q = check_transition(transition, k).to(logits.dtype)
        value = forward_corrected_loss(logits, comp, q.to(logits.device))
    else:
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
        n = logits.shape[0]
        losses = -log_p  # l(f(x_i), k) for every k
        mask = torch.nn.functional.one_hot(comp, k).to(losses.dtype)
        if complementary_prior is None:  # the batch's own complementary-label frequencies
            partial = losses.mean(0) - (k - 1) * (losses * mask).sum(0) / n  # A_k
        else:
            prior = check_complementary_prior(complementary_prior, k).to(losses)
            counts = mask.sum(0)
            class_means = (mask.T @ losses) / counts.clamp_min(1)[:, None]  # row j: mean losses of samples with c = j
            weight = prior * (counts > 0)
            partial = weight @ class_means - (k - 1) * weight * class_means.diagonal()
        return _corrected(partial, correction)
    return value, value


def multiple_complementary_loss(
    logits: Tensor, comp_sets: Tensor, kind: str = "ub_log", correction: str = "free"
) -> tuple[Tensor, Tensor]:
    """Feng et al. (2020) for a multi-hot ``(N, K)`` mask of complementary labels (class indices ``(N,)`` are
    taken as sets of one)."""
    if kind not in MULTIPLE_KINDS:
        raise ValueError(f"kind must be one of {MULTIPLE_KINDS} for multiple complementary labels, got {kind!r}")
    if comp_sets.ndim == 1:
        _check(logits, comp_sets)
        comp_sets = torch.nn.functional.one_hot(comp_sets, logits.shape[1])
    if logits.ndim != 2 or comp_sets.shape != logits.shape:
        raise ValueError(
            f"logits must be (N, K) and the complementary-label mask (N, K), got {tuple(logits.shape)}, "
            f"{tuple(comp_sets.shape)}"
        )
    k = logits.shape[1]
    mask = comp_sets.to(logits.dtype)
    if mask.numel() and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("the complementary-label mask must hold 0 and 1 only")
    d = mask.sum(1)
    bad = torch.nonzero((d < 1) | (d > k - 1)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"sample {i} has {int(d[i])} complementary labels; each sample needs 1 to K - 1 = {k - 1} of them "
            "(with all K classes excluded no label is possible)"
        )
    logits = upcast(logits)
    log_p = logits.log_softmax(1)
    if kind in ("ub_exp", "ub_log"):
        # log of the probability mass on the classes not excluded
        log_rest = torch.logsumexp(log_p.masked_fill(mask.bool(), float("-inf")), dim=1)
        value = (-log_rest).mean() if kind == "ub_log" else torch.exp(-log_rest.exp()).mean()
        return value, value
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    losses = -log_p
    partial = (losses * (1 - (k - 1) * mask / d[:, None])).mean(0)  # A_k
    return _corrected(partial, correction)


def _corrected(partial: Tensor, correction: str) -> tuple[Tensor, Tensor]:
    risk = partial.sum()
    if correction == "free":
        return risk, risk
    if correction == "max":
        corrected = partial.clamp_min(0).sum()
        return corrected, corrected
    negative = partial < 0
    if bool(negative.any()):
        return -partial[negative].sum(), partial.clamp_min(0).sum().detach()
    return risk, risk


class ComplementaryLoss(nn.Module):
    """A loss over (logits, complementary labels: indices or a multi-hot mask) for ``ClassificationTask``-style
    training; ``kind``, ``correction``, ``transition`` and ``complementary_prior`` as in
    :func:`complementary_loss` (left unset, ``transition`` (kind ``forward``) and ``complementary_prior`` (kind
    ``unbiased``, one label per sample) are read from a data module that records them)."""

    def __init__(
        self,
        kind: str = "scl_nl",
        correction: str = "free",
        transition: list[list[float]] | None = None,
        complementary_prior: list[float] | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
        if transition is not None and kind != "forward":
            raise ValueError(f"transition is used by kind 'forward' only, got kind {kind!r}")
        self.kind, self.correction = kind, correction
        self.transition = None if transition is None else check_transition(transition, len(transition))
        self.complementary_prior = (
            None
            if complementary_prior is None
            else check_complementary_prior(complementary_prior, len(complementary_prior))
        )

    def forward(self, logits: Tensor, comp: Tensor) -> Tensor:
        return self.evaluate(logits, comp)[0]

    def evaluate(self, logits: Tensor, comp: Tensor) -> tuple[Tensor, Tensor]:
        """``(objective, risk)`` with this module's options."""
        return complementary_loss(logits, comp, self.kind, self.correction, self.transition, self.complementary_prior)
