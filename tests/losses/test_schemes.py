import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.losses import ELR
from aipflow.models import MLP
from aipflow.passes import extra_pass
from aipflow.tasks import ClassificationTask, CoTeachingTask
from aipflow.testing import quiet_trainer


def test_elr_matches_the_paper_formula_and_updates_targets_once():
    torch.manual_seed(0)
    loss = ELR(lam=3.0, beta=0.7, num_samples=6)
    logits = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    idx = torch.tensor([5, 0, 3])
    value = loss(logits, y, index=idx)
    p = logits.softmax(1).clamp(1e-4, 1 - 1e-4)
    t = 0.3 * p / p.sum(1, keepdim=True)  # from zero targets: (1 - beta) p
    expected = torch.nn.functional.cross_entropy(logits, y) + 3.0 * (1 - (t * p).sum(1)).log().mean()
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(loss.targets[idx].double(), t, atol=1e-6) and loss.targets[1].abs().sum() == 0
    before = loss.targets.clone()
    with extra_pass():  # SAM's second pass etc.: targets stay
        loss(logits, y, index=idx)
    assert torch.equal(before, loss.targets)
    # gradients treat the targets as constants (they are updated without gradient): check with them frozen
    frozen = ELR(num_samples=6).double().eval()
    frozen.targets = loss.targets.double().clone()
    assert torch.autograd.gradcheck(
        lambda z: frozen(z, y, index=idx), (logits.clone().requires_grad_(True),), eps=1e-6, atol=1e-5
    )


def test_elr_errors():
    with pytest.raises(ValueError, match="needs each sample's index"):
        ELR(num_samples=3)(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs num_samples"):
        ELR()(torch.randn(2, 3), torch.tensor([0, 1]), index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\)"):
        ELR(beta=1.0)


def test_scheme_that_needs_indices_given_data_without_them():
    data = DataLoader(TensorDataset(torch.randn(16, 64), torch.randint(0, 10, (16,))), batch_size=8)

    def fit(loss):
        task = ClassificationTask(MLP(hidden=(8,)), loss=loss, reliability_diagram=False)
        quiet_trainer(max_steps=1).fit(task, data)

    with pytest.raises(ValueError, match="ELR needs per-sample indices and the training-set size"):
        fit(ELR())
    with pytest.raises(ValueError, match="ELR needs each sample's index, but the batches carry none"):
        fit(ELR(num_samples=16))


def test_coteaching_schedule_and_cross_update():
    torch.manual_seed(0)
    task = CoTeachingTask(MLP(hidden=(8,)), forget_rate=0.4, num_gradual=10)
    assert task.keep_ratio(0) == 1.0 and task.keep_ratio(5) == pytest.approx(0.8) and task.keep_ratio(30) == 0.6
    assert not torch.equal(task.model.net[1].weight, task.peer.net[1].weight)  # the twin starts elsewhere
    x, y = torch.randn(10, 64), torch.randint(0, 10, (10,))
    task.keep_ratio = lambda epoch=None: 0.5
    task.log = lambda *a, **k: None
    task._update_metrics = lambda *a, **k: None
    loss = task.training_step({"x": x, "y": y}, 0)
    l1 = torch.nn.functional.cross_entropy(task.model(x), y, reduction="none")
    l2 = torch.nn.functional.cross_entropy(task.peer(x), y, reduction="none")
    by1, by2 = l1.argsort()[:5], l2.argsort()[:5]
    assert loss.item() == pytest.approx((l1[by2].mean() + l2[by1].mean()).item(), abs=1e-6)


def test_coteaching_trains_and_logs_label_precision(tmp_path):
    task = CoTeachingTask(
        MLP(hidden=(32,)), forget_rate=0.4, disagreement=True, init_epoch=1, reliability_diagram=False
    )
    trainer = quiet_trainer(max_epochs=2, default_root_dir=tmp_path, limit_train_batches=5, limit_val_batches=1)
    trainer.fit(task, DigitsDataModule(label_noise=LabelNoise("symmetric", 0.4), batch_size=32))
    precision = trainer.callback_metrics["train/label_precision"].item()
    assert 0.0 < precision <= 1.0 and math.isfinite(trainer.callback_metrics["val/acc"].item())


def test_coteaching_bad_forget_rate():
    with pytest.raises(ValueError, match=r"model.forget_rate must lie in \[0, 1\), got 1.0"):
        CoTeachingTask(MLP(), forget_rate=1.0)
