import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from aipflow.metrics import (
    calibration_bins,
    expected_calibration_error,
    log_mean_exp_nll,
    negative_log_likelihood,
    plot_reliability_diagram,
)


def random_probs(n=400, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, k, generator=g)
    return logits.softmax(1), torch.randint(0, k, (n,), generator=g)


def numpy_ece(probs, labels, n_bins):
    conf = probs.max(1)
    pred = probs.argmax(1)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return ece


@pytest.mark.parametrize("n_bins", [10, 15, 20])
def test_ece_matches_numpy_and_torchmetrics(n_bins):
    probs, y = random_probs()
    ours = expected_calibration_error(probs, y, n_bins)
    assert ours == pytest.approx(numpy_ece(probs.double().numpy(), y.numpy(), n_bins), abs=1e-9)
    tm = multiclass_calibration_error(probs, y, num_classes=5, n_bins=n_bins, norm="l1").item()
    assert ours == pytest.approx(tm, abs=1e-5)


def test_bins_count_everything():
    probs, y = random_probs()
    assert calibration_bins(probs, y, 15).count.sum().item() == 400


def test_nll_and_log_mean_exp():
    probs, y = random_probs()
    assert negative_log_likelihood(probs, y) == pytest.approx(
        -np.mean(np.log(probs.double().numpy()[np.arange(400), y.numpy()]))
    )
    samples = torch.stack([random_probs(seed=s)[0] for s in range(3)])
    direct = -samples.double().mean(0).gather(1, y[:, None]).log().mean().item()
    assert log_mean_exp_nll(samples.double().log(), y) == pytest.approx(direct, abs=1e-9)
    # stable where probabilities underflow in float32
    tiny = torch.full((2, 1, 2), -200.0)
    assert math.isfinite(log_mean_exp_nll(tiny, torch.tensor([0])))


def test_reliability_diagram_is_written(tmp_path):
    probs, y = random_probs()
    path = plot_reliability_diagram(probs, y, tmp_path / "r.png", 15, title="t")
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"


def test_reliability_diagram_draws_nothing_over_the_accuracy_bars():
    # under-confident bins (the usual case under label noise): a gap bar stacked on the accuracy bar made the
    # accuracy seem to sit on the diagonal. Every bar now starts at 0 and is the bin's accuracy; the confidence
    # is a marker at the bin's mean confidence
    import matplotlib.pyplot as plt

    from aipflow.metrics import reliability_figure

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (400,), generator=g)
    logits = 0.3 * torch.randn(400, 10, generator=g)
    logits[torch.arange(400), y] += 2.5  # right almost always, with confidences ~0.6
    bins = calibration_bins(logits.softmax(1), y, 15)
    fig = reliability_figure(logits.softmax(1), y, 15, title="run", probabilities="softmax")
    top = fig.axes[0]
    bars = [p for p in top.patches]
    nonempty = bins.count > 0
    assert len(bars) == int(nonempty.sum())
    assert all(bar.get_y() == 0 for bar in bars)
    assert [round(bar.get_height(), 9) for bar in bars] == [round(a, 9) for a in bins.accuracy[nonempty].tolist()]
    markers = [line for line in top.get_lines() if line.get_marker() == "D"][0]
    assert list(markers.get_ydata()) == pytest.approx(bins.confidence[nonempty].tolist())
    assert "run: ECE = " in top.get_title() and "softmax" in top.get_title()
    labels = [t.get_text() for t in fig.axes[1].texts]
    assert labels == [str(int(c)) for c in bins.count[nonempty].tolist()]  # the counts are written on the bars
    plt.close(fig)


def test_shape_errors():
    with pytest.raises(ValueError, match="probs must be"):
        calibration_bins(torch.rand(3), torch.zeros(3, dtype=torch.long))
