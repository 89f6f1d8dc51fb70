"""Complementary / partial-label digits data (conventions and realised quantities) and the multi-class task."""

import lightning as L
import numpy as np
import pytest
import torch
from aipflow_weaksup.multiclass import (
    WeakDigitsDataModule,
    WeakMulticlassTask,
    complementary_labels,
    partial_labels,
)
from aipflow_weaksup.risks.complementary import ComplementaryLoss
from aipflow_weaksup.risks.partial import PartialLabelLoss

from aipflow.models import MLP
from aipflow.testing import quiet_trainer


def test_complementary_labels_are_uniform_over_the_other_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6000)
    comp = complementary_labels(y, 4, 1, rng)
    assert (comp != y).all()
    counts = np.array([[np.mean(comp[y == a] == b) for b in range(4)] for a in range(4)])
    off = counts[~np.eye(4, dtype=bool)]
    assert np.allclose(off, 1 / 3, atol=0.03)
    mask = complementary_labels(y, 4, 2, rng)
    assert (mask.sum(1) == 2).all() and (mask[np.arange(len(y)), y] == 0).all()


def test_partial_labels_hold_the_truth_and_each_other_class_with_probability_q():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 20000)
    mask = partial_labels(y, 10, 0.3, rng)
    assert (mask[np.arange(len(y)), y] == 1).all()
    assert mask.sum(1).mean() == pytest.approx(1 + 9 * 0.3, abs=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weak": "noisy"}, "data.weak must be one of"),
        ({"num_complementary": 10}, r"num_complementary must lie in \[1, 9\]"),
        ({"weak": "partial", "partial_q": 1.0}, r"partial_q must lie in \[0, 1\)"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeakDigitsDataModule(**kwargs).setup()


def test_data_module_records_and_batches():
    dm = WeakDigitsDataModule(weak="partial", partial_q=0.3)
    dm.setup()
    assert dm.mean_set_size == pytest.approx(3.7, abs=0.2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["weak"].shape == (128, 10) and batch["index"].shape == (128,)
    with pytest.raises(TypeError, match="ComplementaryLoss or PartialLabelLoss"):
        WeakMulticlassTask(MLP(64, 10), torch.nn.CrossEntropyLoss())


@pytest.mark.parametrize(
    "weak, loss, floor",
    [("partial", PartialLabelLoss("proden"), 0.9), ("complementary", ComplementaryLoss("scl_nl"), 0.3)],
)
def test_task_learns_from_weak_labels(weak, loss, floor):
    L.seed_everything(0, verbose=False)
    dm = WeakDigitsDataModule(weak=weak, batch_size=128)
    task = WeakMulticlassTask(MLP(64, 10, hidden=[128]), loss)
    trainer = quiet_trainer(max_epochs=15)
    trainer.fit(task, dm)
    assert "val/weak_risk" in trainer.callback_metrics
    acc = trainer.test(task, dm, verbose=False)[0]["test/acc"]
    assert acc > floor  # chance is 0.1


def test_biased_complementary_labels_follow_the_recorded_transition_and_train_forward():
    from aipflow_weaksup.multiclass import biased_transition
    from aipflow_weaksup.risks.complementary import check_transition, complementary_loss

    q = biased_transition(10, 3, np.random.default_rng(0))
    assert np.allclose(q.sum(1), 1) and (np.diag(q) == 0).all() and ((q > 0).sum(1) == 3).all()
    dm = WeakDigitsDataModule(weak="complementary", complementary="biased", biased_support=3)
    dm.setup()
    comp, y = dm.train_set.weak.numpy(), dm.train_set.y.numpy()
    assert (dm.transition[y, comp] > 0).all()  # every drawn label is in its row's support
    freq = np.stack([np.bincount(comp[y == c], minlength=10) / (y == c).sum() for c in range(10)])
    assert np.abs(freq - dm.transition).max() < 0.17  # ~117 draws per class: within ~3.5 standard errors
    # the forward loss with Q is -log (softmax(f) Q)_c, by hand
    logits = torch.randn(5, 10, dtype=torch.float64)
    labels = torch.tensor([1, 2, 3, 4, 5])
    qt = torch.tensor(q)
    expected = -torch.log((logits.softmax(1) @ qt)[torch.arange(5), labels]).mean()
    assert complementary_loss(logits, labels, "forward", transition=q)[0].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="zero diagonal"):
        check_transition(np.eye(3)[[1, 1, 0]] * 0 + np.eye(3), 3)
    with pytest.raises(ValueError, match="probability vectors"):
        check_transition(np.ones((3, 3)) - np.eye(3), 3)
    with pytest.raises(ValueError, match="used by kind 'forward' only"):
        ComplementaryLoss("scl_nl", transition=q.tolist())
    with pytest.raises(ValueError, match="biased draws one label"):
        WeakDigitsDataModule(complementary="biased", num_complementary=2)
    # the task reads Q from the data module
    L.seed_everything(0, verbose=False)
    task = WeakMulticlassTask(MLP(in_features=64, num_classes=10, hidden=(64,)), ComplementaryLoss("forward"))
    trainer = quiet_trainer(max_epochs=15)
    trainer.fit(task, dm)
    assert torch.allclose(task.loss.transition, torch.tensor(dm.transition))
    assert trainer.test(task, dm, verbose=False)[0]["test/acc"] > 0.5  # chance is 0.1


def test_pair_partial_labels_add_only_the_partner_class():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 4000)
    mask = partial_labels(y, 5, 0.3, rng, kind="pair")
    rows = np.arange(len(y))
    assert (mask[rows, y] == 1).all()
    partner = mask[rows, (y + 1) % 5]
    assert partner.mean() == pytest.approx(0.3, abs=0.02)
    assert mask.sum() == len(y) + partner.sum()  # nothing else joins
    dm = WeakDigitsDataModule(weak="partial", partial="pair", partial_q=0.3)
    dm.setup()
    assert dm.mean_set_size == pytest.approx(1.3, abs=0.05)
    with pytest.raises(ValueError, match="data.partial must be one of"):
        WeakDigitsDataModule(weak="partial", partial="uniform")
