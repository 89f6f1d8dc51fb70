"""Checkpoints lose nothing: 1 epoch, a checkpoint, and a resumed second epoch give exactly the weights and
buffers of 2 epochs straight (data order by (seed, epoch), per-sample weights in the checkpoint)."""

import pytest
import torch
from aipflow_weaksup.data import PUDigitsDataModule
from aipflow_weaksup.multiclass import WeakDigitsDataModule, WeakMulticlassTask
from aipflow_weaksup.risks import PURisk
from aipflow_weaksup.risks.partial import PartialLabelLoss
from aipflow_weaksup.task import WeakBinaryTask

from aipflow.models import MLP
from aipflow.testing import quiet_trainer


def make(setting):
    if setting == "nnpu":
        return WeakBinaryTask(MLP(64, 1, hidden=[32]), PURisk()), PUDigitsDataModule(batch_size=128)
    task = WeakMulticlassTask(MLP(64, 10, hidden=[32]), PartialLabelLoss(setting))
    return task, WeakDigitsDataModule(weak="partial", batch_size=256)


@pytest.mark.parametrize("setting", ["nnpu", "proden", "rc"])
def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(setting, tmp_path):
    def run(epochs, ckpt_path=None):
        torch.manual_seed(0)
        task, dm = make(setting)
        trainer = quiet_trainer(max_epochs=epochs, num_sanity_val_steps=0)
        trainer.fit(task, dm, ckpt_path=ckpt_path)
        return trainer, task

    _, straight = run(2)
    first, _ = run(1)
    first.save_checkpoint(tmp_path / "one.ckpt")
    saved = torch.load(tmp_path / "one.ckpt", weights_only=True)["state_dict"]
    if setting != "nnpu":
        assert saved["loss.weights"].shape == (WeakDigitsDataModule(weak="partial").train_size, 10)
    _, resumed = run(2, ckpt_path=tmp_path / "one.ckpt")
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
