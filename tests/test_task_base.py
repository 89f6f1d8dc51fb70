"""One task base: every task derives from ``aipflow.tasks.Task`` and declares only what it adds; the command reads
the inherited options, the saved hyper-parameters hold them, a checkpoint rebuilds the task."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch
from jsonargparse import ArgumentParser

from aipflow.lightning import NonFiniteGuard, RNGStateCheckpoint, SharpnessAwareTraining
from aipflow.models import MLP
from aipflow.plugins import get_registry
from aipflow.tasks import ClassificationTask, CoTeachingTask, Task
from aipflow.testing import quiet_trainer


def registered_tasks() -> dict[str, type]:
    """Every task class the registry names (the core's and every installed plugin's)."""
    registry = get_registry()
    found = {}
    for name in registry.names():
        try:
            target = registry.load(name)
        except Exception:  # noqa: BLE001 - a broken plugin is another test's business
            continue
        if inspect.isclass(target) and issubclass(target, L.LightningModule):
            found[name] = target
    return found


def own_parameters(cls: type) -> list[str]:
    init = cls.__dict__.get("__init__")
    if init is None:
        return []
    return [p.name for p in inspect.signature(init).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]


def test_every_registered_task_derives_from_the_base():
    tasks = registered_tasks()
    assert {"ClassificationTask", "CoTeachingTask"} <= set(tasks)
    assert not [name for name, cls in tasks.items() if not issubclass(cls, Task)]


@pytest.mark.parametrize("name", sorted(registered_tasks()))
def test_a_task_declares_only_what_it_adds(name):
    cls = registered_tasks()[name]
    inherited = set()
    for parent in cls.__mro__[1:]:
        if issubclass(parent, Task):
            inherited.update(own_parameters(parent))
    relisted = sorted((set(own_parameters(cls)) & inherited) - {"model"})
    assert not relisted, f"{name} re-lists its parent's arguments {relisted}: take **kwargs and hand them on"


def test_the_command_reads_the_inherited_options():
    parser = ArgumentParser()
    parser.add_class_arguments(CoTeachingTask, "model")
    options = {action.dest.split(".", 1)[1] for action in parser._actions if action.dest.startswith("model.")}
    assert {"forget_rate", "optimizer", "lr_scheduler_interval", "num_classes", "posterior_samples"} <= options
    assert "loss" not in options  # co-teaching's cross-entropy is the papers', not an option
    config = parser.parse_args(["--model.model=aipflow.models.MLP", "--model.ece_bins=7", "--model.forget_rate=0.3"])
    task = parser.instantiate(config).model
    assert task.hparams.ece_bins == 7 and task.hparams.forget_rate == 0.3


def test_saved_hyperparameters_hold_the_whole_chain_and_rebuild_the_task(tmp_path):
    task = CoTeachingTask(MLP(), forget_rate=0.3, ece_bins=7, lr_scheduler_interval="step")
    hparams = dict(task.hparams)
    assert hparams["forget_rate"] == 0.3 and hparams["ece_bins"] == 7 and hparams["lr_scheduler_interval"] == "step"
    assert hparams["posterior_samples"] == 0 and hparams["num_classes"] == 10  # the parents' defaults
    assert not [k for k, v in hparams.items() if isinstance(v, torch.nn.Module) or callable(v)]
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(task)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["forget_rate"] == 0.3
    rebuilt = CoTeachingTask.load_from_checkpoint(path, model=MLP())
    assert dict(rebuilt.hparams) == hparams
    assert all(torch.equal(a, b) for a, b in zip(task.state_dict().values(), rebuilt.state_dict().values()))


@pytest.mark.parametrize("cls", [CoTeachingTask, "ReweightingTask"])
def test_a_task_that_weighs_its_own_rows_refuses_the_datas_weights(cls):
    if isinstance(cls, str):
        cls = registered_tasks().get(cls) or pytest.skip(f"{cls}'s plugin is not installed")
    with pytest.raises(ValueError, match=r"^model.sample_weights: .* set sample_weights: false$"):
        cls(MLP(), sample_weights=True)
    ClassificationTask(MLP(), sample_weights=True)  # the base honours them


def test_the_base_gives_a_plain_trainer_what_a_run_needs():
    class Minimal(Task):
        def training_step(self, batch, batch_idx):
            return self(batch[0]).square().mean()

    task = Minimal(MLP())
    trainer = quiet_trainer(callbacks=[])
    task.trainer = trainer
    kinds = [type(cb) for cb in task.configure_callbacks()]
    assert RNGStateCheckpoint in kinds and NonFiniteGuard in kinds
    assert not any(issubclass(k, SharpnessAwareTraining) for k in kinds)  # the entry point's is on the trainer
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 1e-2
    with pytest.raises(ValueError, match="model.lr_scheduler_interval must be 'epoch' or 'step', got 'batch'"):
        Minimal(MLP(), lr_scheduler_interval="batch")
