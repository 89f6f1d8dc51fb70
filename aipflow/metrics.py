"""Calibration and likelihood helpers over torchmetrics, and the reliability diagram.

ECE follows torchmetrics' ``MulticlassCalibrationError(norm="l1")``: top-label confidence, equal-width bins over
[0, 1], ``sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``. The default number of bins is 15 (Guo et al. 2017); the
bSAM paper uses 20, which posterior-predictive evaluation uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_ECE_BINS = 15


@dataclass
class CalibrationBins:
    confidence: torch.Tensor  # mean top-label confidence per bin (0 where empty)
    accuracy: torch.Tensor  # accuracy per bin (0 where empty)
    count: torch.Tensor  # samples per bin
    edges: torch.Tensor

    @property
    def ece(self) -> float:
        n = self.count.sum().clamp_min(1)
        return float((self.count / n * (self.accuracy - self.confidence).abs()).sum())


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_ECE_BINS) -> CalibrationBins:
    """Bin top-label confidences into ``n_bins`` equal-width bins (right-closed, as torchmetrics)."""
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, K) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    probs = probs.double()
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    which = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, correct)
    safe = count.clamp_min(1)
    return CalibrationBins(conf_sum / safe, acc_sum / safe, count, edges)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_ECE_BINS) -> float:
    return calibration_bins(probs, labels, n_bins).ece


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean ``-log p(y|x)`` from probabilities (e.g. a posterior-predictive average)."""
    return float(-probs.double().gather(1, labels[:, None]).clamp_min(eps).log().mean())


def log_mean_exp_nll(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """NLL of the average of S predictive distributions given as ``(S, N, K)`` log-probabilities, computed with
    log-sum-exp (stable where the probabilities underflow)."""
    picked = log_probs.double().gather(2, labels[None, :, None].expand(log_probs.shape[0], -1, 1)).squeeze(2)
    return float(-(torch.logsumexp(picked, 0) - math.log(log_probs.shape[0])).mean())


def plot_reliability_diagram(
    probs: torch.Tensor, labels: torch.Tensor, path: str | Path, n_bins: int = DEFAULT_ECE_BINS, title: str = ""
) -> Path:
    """Write a reliability diagram (accuracy vs confidence per bin, with the gap shaded and a histogram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = calibration_bins(probs, labels, n_bins)
    centers = ((bins.edges[:-1] + bins.edges[1:]) / 2).numpy()
    width = 1.0 / n_bins
    nonempty = (bins.count > 0).numpy()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers[nonempty], bins.accuracy.numpy()[nonempty], width=width, edgecolor="k", label="accuracy")
    ax.bar(
        centers[nonempty],
        (bins.confidence - bins.accuracy).numpy()[nonempty],
        bottom=bins.accuracy.numpy()[nonempty],
        width=width,
        color="tab:red",
        alpha=0.35,
        edgecolor="tab:red",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}  ECE={bins.ece:.4f} ({n_bins} bins)".strip())
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(centers, bins.count.numpy(), width=width, edgecolor="k", color="tab:gray")
    hist.set_xlabel("confidence")
    hist.set_ylabel("count")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
