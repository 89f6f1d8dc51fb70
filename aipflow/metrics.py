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

__all__ = [
    "DEFAULT_ECE_BINS",
    "CalibrationBins",
    "calibration_bins",
    "expected_calibration_error",
    "log_mean_exp_nll",
    "negative_log_likelihood",
    "plot_reliability_diagram",
    "reliability_figure",
]

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
    probs: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    n_bins: int = DEFAULT_ECE_BINS,
    title: str = "",
    probabilities: str = "softmax of the network's logits",
) -> Path:
    """Write :func:`reliability_figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = reliability_figure(probs, labels, n_bins, title, probabilities)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reliability_figure(
    probs: torch.Tensor,
    labels: torch.Tensor,
    n_bins: int = DEFAULT_ECE_BINS,
    title: str = "",
    probabilities: str = "softmax of the network's logits",
):
    """A reliability diagram that reads correctly whichever way a bin is off (a matplotlib figure).

    Per non-empty bin: the accuracy as a bar from 0, the mean confidence as a marker, and the gap between them as a
    vertical segment (red where over-confident, confidence above accuracy; blue where under-confident, the usual
    case under label noise). Nothing is drawn over the accuracy bar, so it is never hidden. The diagonal is perfect
    calibration; the lower panel counts the samples per bin (numbers on the bars, empty bins left blank); the
    legend sits outside the axes; the title names the run, the ECE with its bin count and which probabilities were
    binned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = calibration_bins(probs, labels, n_bins)
    centers = ((bins.edges[:-1] + bins.edges[1:]) / 2).numpy()
    width = 1.0 / n_bins
    nonempty = (bins.count > 0).numpy()
    acc, conf, count = bins.accuracy.numpy(), bins.confidence.numpy(), bins.count.numpy()
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(6.8, 5.6), gridspec_kw={"height_ratios": [3, 1.1]}, sharex=True, layout="constrained"
    )
    ax.bar(
        centers[nonempty],
        acc[nonempty],
        width=width * 0.9,
        color="tab:blue",
        alpha=0.55,
        edgecolor="tab:blue",
        label="accuracy in the bin",
    )
    over = nonempty & (conf > acc)
    under = nonempty & (conf <= acc)
    ax.vlines(centers[over], acc[over], conf[over], colors="tab:red", lw=2.5, label="gap: over-confident")
    ax.vlines(centers[under], conf[under], acc[under], colors="navy", lw=2.5, label="gap: under-confident")
    ax.plot(centers[nonempty], conf[nonempty], "D", color="black", ms=4.5, label="mean confidence in the bin")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy / confidence")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1)
    heading = f"{title}: " if title else ""
    ax.set_title(f"{heading}ECE = {bins.ece:.4f} ({n_bins} bins)\n{probabilities}", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    hist.bar(centers[nonempty], count[nonempty], width=width * 0.9, color="tab:gray", edgecolor="k")
    for x, c in zip(centers[nonempty], count[nonempty], strict=True):
        hist.annotate(
            f"{int(c)}", (x, c), ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points"
        )
    hist.set_ylim(0, max(count.max(), 1) * 1.25)
    hist.set_xlabel("top-label confidence")
    hist.set_ylabel("samples")
    return fig
