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
    trainer = L.Trainer(
        max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(task, dm)
    assert "val/weak_risk" in trainer.callback_metrics
    acc = trainer.test(task, dm, verbose=False)[0]["test/acc"]
    assert acc > floor  # chance is 0.1
