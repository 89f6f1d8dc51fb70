import pytest
import torch

from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.lightning import LabelNoiseMonitor, TransitionMatrixEstimation
from aipflow.losses import ForwardCorrection
from aipflow.models import MLP
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer


def fit(task, callbacks, epochs, noise="symmetric", rate=0.4):
    trainer = quiet_trainer(max_epochs=epochs, callbacks=callbacks, limit_val_batches=1)
    trainer.fit(task, DigitsDataModule(label_noise=LabelNoise(noise, rate), flatten=True, batch_size=32))
    return trainer


def test_label_noise_monitor_tracks_clean_and_noisy_fit():
    torch.manual_seed(0)
    monitor = LabelNoiseMonitor(track_test=True)
    trainer = fit(ClassificationTask(MLP(hidden=(64,)), reliability_diagram=False), [monitor], 3)
    assert [h["epoch"] for h in monitor.history] == [0, 1, 2]
    last = monitor.history[-1]
    # 40 % wrong labels: a model that learnt the task agrees far more with the clean labels than the noisy ones
    assert last["fit_clean_labels"] > last["fit_noisy_labels"] + 0.15
    assert 0.5 < last["test_acc"] <= 1.0
    assert trainer.callback_metrics["train/fit_clean_labels"].item() == pytest.approx(last["fit_clean_labels"])


def test_transition_matrix_is_estimated_and_handed_to_the_loss():
    torch.manual_seed(0)
    loss = ForwardCorrection(num_classes=10)
    estimation = TransitionMatrixEstimation(warmup_epochs=2, percentile=97.0)
    trainer = fit(
        ClassificationTask(MLP(hidden=(64,)), loss=loss, reliability_diagram=False),
        [estimation],
        3,
        noise="pair",
        rate=0.3,
    )
    t = loss.transition_matrix
    assert torch.equal(t, estimation.estimate) and not torch.equal(t, torch.eye(10))
    assert torch.allclose(t.sum(1), torch.ones(10), atol=1e-5)
    # pair noise puts mass on (i, i+1): the estimate finds it on most rows
    off = torch.tensor([t[i, (i + 1) % 10] for i in range(10)])
    assert (off > 0.1).sum() >= 6
    assert "train/transition_estimate_max_error" in trainer.callback_metrics


def test_estimation_needs_a_correction_loss():
    with pytest.raises(ValueError, match="needs a loss with set_transition_matrix"):
        fit(ClassificationTask(MLP(hidden=(8,)), reliability_diagram=False), [TransitionMatrixEstimation(1)], 1)
