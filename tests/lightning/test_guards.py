"""Nothing is trained on NaN and no model is selected on NaN: the run stops with one line."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from aipflow.lightning import NonFiniteGuard
from aipflow.testing import quiet_trainer
from tests.lightning.helpers import CountingModule, loader, regression_data


def make_trainer(tmp_path, callbacks, **kwargs):
    return quiet_trainer(enable_checkpointing=True, default_root_dir=tmp_path, callbacks=callbacks, **kwargs)


@pytest.mark.parametrize("optimizer", ["SGD", "SAM"])
def test_a_nan_loss_stops_before_any_weight_moves(optimizer, tmp_path):
    import functools

    from aipflow.optim import SAM

    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    factory = sgd if optimizer == "SGD" else functools.partial(SAM, base_optimizer=sgd)
    x, y = regression_data(64)
    model = CountingModule(factory, inject_inf_on_call={4 if optimizer == "SGD" else 8})  # the step-4 loss is inf
    snapshots = []

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            snapshots.append([p.detach().clone() for p in pl_module.parameters()])

    with pytest.raises(FloatingPointError, match=r"non-finite training loss inf at epoch 0, step 4: nothing was"):
        make_trainer(tmp_path, [NonFiniteGuard(), Snapshot()], max_steps=8).fit(model, loader(x, y, 8))
    assert all(torch.equal(a, b) for a, b in zip(snapshots[-1], model.parameters()))  # untouched by the inf


class NaNValidation(CountingModule):
    def validation_step(self, batch, batch_idx):
        self.log("val_metric", torch.tensor(float("nan")) if self.current_epoch >= 1 else torch.tensor(1.0))


def test_a_nan_monitored_metric_stops_the_run(tmp_path):
    x, y = regression_data(32)
    model = NaNValidation(lambda params: torch.optim.SGD(params, lr=0.01))
    checkpoint = ModelCheckpoint(monitor="val_metric", dirpath=tmp_path)
    with pytest.raises(FloatingPointError, match="the monitored metric val_metric is nan after epoch 1"):
        make_trainer(tmp_path, [NonFiniteGuard(), checkpoint], max_epochs=3).fit(
            model, loader(x, y, 16), loader(x, y, 16)
        )


def test_the_guard_is_part_of_every_classification_run():
    from aipflow.models import MLP
    from aipflow.tasks import ClassificationTask

    trainer = quiet_trainer(enable_checkpointing=True, max_steps=0)
    task = ClassificationTask(MLP(hidden=(8,)))
    task.trainer = trainer
    assert any(isinstance(cb, NonFiniteGuard) for cb in task.configure_callbacks())
