"""Loss correction with a noise transition matrix ``T[i, j] = P(noisy = j | clean = i)``.

- forward correction (Patrini et al., CVPR 2017): ``-log (p^T T)_y~`` (the model's clean posterior pushed
  through T, scored on the noisy label);
- backward correction (same paper): ``(T^{-1} l)_y~`` with ``l_k = -log p_k`` (unbiased, can go negative);
- T estimated from anchor points (same paper): row i of T is the noisy-class posterior of the sample most
  confidently in class i, or of the sample at the ``percentile`` of that confidence (their robust variant, 97);
- T estimated from the confident joint (Northcutt, Jiang & Chuang, JAIR 2021, "Confident Learning"): per-class
  thresholds at the mean self-confidence make it insensitive to how confident the model is overall, where the
  anchors read the extreme tail of that confidence;
- T-Revision (Xia et al., NeurIPS 2019): importance reweighting ``w = p_y~ / (p^T T)_y~`` (no gradient) of the
  forward-corrected loss, with ``T = T_hat + dT`` and the slack ``dT`` learned with the network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aipflow.losses.robust import _Loss, check_inputs, reduce, upcast


def check_transition_matrix(t: Tensor, num_classes: int | None = None, atol: float = 1e-4) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.float32)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"transition matrix must be square (K, K), got shape {tuple(t.shape)}")
    if num_classes is not None and t.shape[0] != num_classes:
        raise ValueError(
            f"transition matrix must be ({num_classes}, {num_classes}) for {num_classes} classes, got {tuple(t.shape)}"
        )
    if (t < -atol).any():
        raise ValueError(f"transition matrix must be non-negative, min entry {float(t.min()):.4g}")
    rows = t.sum(1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=atol):
        raise ValueError(f"transition matrix rows must sum to 1 (row-stochastic), got row sums {rows.tolist()}")
    return t


def forward_corrected_loss(logits: Tensor, target: Tensor, t: Tensor, reduction: str = "mean") -> Tensor:
    check_inputs(logits, target)
    # log (p^T T)_y = logsumexp_k (log p_k + log T_ky): exact where p underflows (no floor: at gap 100 the true
    # loss is ~100, a 1e-12 floor said 27.6); a zero T_ky is a -inf term with zero weight. A label that T makes
    # impossible (a zero column) gives an infinite loss, which the task reports as non-finite.
    log_p = upcast(logits).log_softmax(1)
    log_t = t.to(logits.device, log_p.dtype).log()[:, target].T  # (N, K): log T_{k, y_i}
    return reduce(-(log_p + log_t).logsumexp(1), reduction)


def backward_corrected_loss(logits: Tensor, target: Tensor, t: Tensor, reduction: str = "mean") -> Tensor:
    check_inputs(logits, target)
    losses = -upcast(logits).log_softmax(1)  # l_k for every class k
    corrected = losses @ torch.linalg.inv(t.to(logits.device, upcast(logits).dtype)).T  # (T^{-1} l) per sample
    return reduce(corrected.gather(1, target[:, None]).squeeze(1), reduction)


def estimate_transition_matrix(noisy_posteriors: Tensor, percentile: float | None = None) -> Tensor:
    """Anchor-point estimate of T from ``P(noisy | x)`` predicted by a model trained on the noisy labels.

    For each class i the anchor is ``argmax_x P(noisy = i | x)``, or with ``percentile`` (e.g. 97) the sample
    at that percentile of ``P(noisy = i | x)`` (robust to outliers); row i of T is the anchor's posterior.
    """
    probs = torch.as_tensor(noisy_posteriors, dtype=torch.float64)
    if probs.ndim != 2:
        raise ValueError(f"noisy_posteriors must be (N, K), got {tuple(probs.shape)}")
    if percentile is not None and not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    k = probs.shape[1]
    t = torch.empty(k, k, dtype=torch.float64)
    for i in range(k):
        column = probs[:, i]
        if percentile is None:
            anchor = int(column.argmax())
        else:
            threshold = torch.quantile(column, percentile / 100.0, interpolation="higher")
            anchor = int(torch.nonzero(column >= threshold)[(column[column >= threshold]).argmin()].squeeze())
        t[i] = probs[anchor]
    return (t / t.sum(1, keepdim=True)).float()


def confident_joint(noisy_posteriors: Tensor, noisy_labels: Tensor) -> Tensor:
    """The calibrated confident joint of Confident Learning (Northcutt, Jiang & Chuang, JAIR 2021, Sec. 3.1),
    written from the paper: aipflow's one implementation (the transition-matrix estimate and the label-issue
    summary read it; ``tests/losses/test_confident_joint.py`` checks it against cleanlab's ``estimate_joint``).

    With ``p_j(x)`` the predicted probability of noisy class j and ``X_i`` the samples labelled i:

    - thresholds ``t_j = mean_{x in X_j} p_j(x)`` (each class's expected self-confidence);
    - confident joint ``C[i, j] = |{x in X_i : p_j(x) >= t_j}|``, a sample above several thresholds counted once,
      for the class of its largest such ``p_j``; samples above none are not counted;
    - calibrated joint ``Q[i, j] = C[i, j] / sum_j C[i, j] * |X_i|``, normalised to sum to 1
      (an estimate of ``P(noisy = i, clean = j)``).

    Returns ``Q`` as a float64 ``(K, K)`` tensor, rows the given (noisy) label. (cleanlab rounds ``Q * N`` to
    integer counts keeping each row's total; this keeps the fractions.)"""
    probs = torch.as_tensor(noisy_posteriors, dtype=torch.float64)
    labels = torch.as_tensor(noisy_labels, dtype=torch.long)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"noisy_posteriors must be (N, K) and noisy_labels (N,), got {tuple(probs.shape)}, {tuple(labels.shape)}"
        )
    k = probs.shape[1]
    counts = torch.bincount(labels, minlength=k).double()
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"every class needs labelled samples for its threshold; none are labelled {missing}")
    thresholds = torch.stack([probs[labels == j, j].mean() for j in range(k)])
    above = probs >= thresholds
    confident_class = torch.where(above, probs, torch.full_like(probs, -1.0)).argmax(1)
    counted = above.any(1)
    joint = torch.zeros(k, k, dtype=torch.float64)
    joint.index_put_(
        (labels[counted], confident_class[counted]), torch.ones(int(counted.sum()), dtype=torch.float64), True
    )
    calibrated = joint / joint.sum(1, keepdim=True).clamp_min(1) * counts[:, None]
    return calibrated / calibrated.sum()


def estimate_transition_matrix_confident_joint(noisy_posteriors: Tensor, noisy_labels: Tensor) -> Tensor:
    """T from the confident joint of Confident Learning (:func:`confident_joint`):
    ``T[j, i] = P(noisy = i | clean = j) = Q[i, j] / sum_i Q[i, j]`` (aipflow's convention: rows are clean).

    Returns a row-stochastic ``(K, K)`` fp32 T. A clean class that no sample is confidently assigned to gets the
    identity row (no evidence of noise)."""
    calibrated = confident_joint(noisy_posteriors, noisy_labels)
    k = calibrated.shape[0]
    column = calibrated.sum(0, keepdim=True)
    identity = torch.eye(k, dtype=torch.float64)
    noisy_given_clean = torch.where(column > 0, calibrated / column.clamp_min(1e-300), identity)
    return noisy_given_clean.T.float()


class _Corrected(_Loss):
    def __init__(
        self,
        transition_matrix: list[list[float]] | None = None,
        num_classes: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        if transition_matrix is None and num_classes is None:
            raise ValueError("give transition_matrix, or num_classes to start from the identity (T set later)")
        t = (
            torch.eye(num_classes)
            if transition_matrix is None
            else check_transition_matrix(torch.tensor(transition_matrix), num_classes)
        )
        self.register_buffer("transition_matrix", t)

    def set_transition_matrix(self, t: Tensor) -> None:
        self.transition_matrix.copy_(check_transition_matrix(t, self.transition_matrix.shape[0]))


class ForwardCorrection(_Corrected):
    """Forward loss correction (Patrini et al. 2017) with a known T (or the identity until one is set)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return forward_corrected_loss(logits, target, self.transition_matrix, self.reduction)


class BackwardCorrection(_Corrected):
    """Backward loss correction (Patrini et al. 2017) with a known, invertible T."""

    def set_transition_matrix(self, t: Tensor) -> None:
        super().set_transition_matrix(t)
        if torch.linalg.matrix_rank(self.transition_matrix) < self.transition_matrix.shape[0]:
            raise ValueError("backward correction needs an invertible transition matrix")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return backward_corrected_loss(logits, target, self.transition_matrix, self.reduction)


class TRevision(_Corrected):
    """T-Revision (Xia et al. 2019): the reweighted forward-corrected loss with a learned slack ``dT`` on T_hat.

    ``dT`` is a parameter (it joins the optimizer with the network); ``T = clamp(T_hat + dT, 0)`` row-normalised.
    """

    def __init__(
        self,
        transition_matrix: list[list[float]] | None = None,
        num_classes: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(transition_matrix, num_classes, reduction)
        self.delta = nn.Parameter(torch.zeros_like(self.transition_matrix))

    def revised(self) -> Tensor:
        t = (self.transition_matrix + self.delta).clamp_min(0)
        return t / t.sum(1, keepdim=True)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        check_inputs(logits, target)
        p = upcast(logits).softmax(1)
        noisy = p @ self.revised().to(p.dtype)
        noisy_y = noisy.gather(1, target[:, None]).squeeze(1).clamp_min(1e-12)
        weight = (p.gather(1, target[:, None]).squeeze(1) / noisy_y).detach()
        return reduce(-weight * noisy_y.log(), self.reduction)
