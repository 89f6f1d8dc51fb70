"""Knowledge distillation against Hinton et al.'s formula in float64 (the loss and its gradient ``T (q - p) / N``),
extreme logits, and the task: its loss on a batch equal to ``alpha`` soft + ``1 - alpha`` hard by hand, with a
core robust loss and SAM; the teacher loaded from an aipflow checkpoint, frozen, in eval mode, out of the
optimizer; one line for a teacher checkpoint that does not fit."""

import functools

import lightning as L
import numpy as np
import pytest
import torch
from aipflow_compress.distill import DistillationTask, distillation_loss

from aipflow.data import DigitsDataModule
from aipflow.losses import GCE
from aipflow.models import MLP, SmallCNN
from aipflow.optim import SAM
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer


def softmax64(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_the_loss_and_its_gradient_are_hintons(temperature):
    rng = np.random.default_rng(0)
    student, teacher = rng.standard_normal((6, 5)) * 3, rng.standard_normal((6, 5)) * 3
    p, q = softmax64(teacher / temperature), softmax64(student / temperature)
    expected = temperature**2 * (p * (np.log(p) - np.log(q))).sum(1).mean()
    z = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    loss = distillation_loss(z, torch.tensor(teacher), temperature)
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert np.allclose(z.grad.numpy(), temperature * (q - p) / 6, atol=1e-12)  # Hinton et al., eq. 2 times T^2


def test_extreme_and_low_precision_logits_stay_finite():
    student = torch.tensor([[1e4, -1e4, 0.0], [-3e4, 3e4, 1.0]])
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [3e4, -3e4, 1.0]])
    assert torch.isfinite(distillation_loss(student, teacher, 4.0))
    half = distillation_loss(student.bfloat16() / 1e3, teacher.bfloat16() / 1e3, 2.0)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert float(distillation_loss(teacher, teacher, 4.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(
        SmallCNN(num_classes=10, in_channels=1, width=8), num_classes=10, reliability_diagram=False
    )
    trainer = quiet_trainer(
        max_epochs=1,
        limit_val_batches=0,
    )
    trainer.fit(task, DigitsDataModule(batch_size=64))
    trainer.save_checkpoint(root / "teacher.ckpt")
    return root / "teacher.ckpt", task.model


def test_the_task_loss_is_alpha_soft_plus_one_minus_alpha_hard_with_a_core_loss(teacher_checkpoint):
    path, trained = teacher_checkpoint
    task = DistillationTask(
        MLP(in_features=64, num_classes=10, hidden=[16]),
        teacher=SmallCNN(num_classes=10, in_channels=1, width=8),
        teacher_checkpoint=str(path),
        temperature=3.0,
        alpha=0.7,
        loss=GCE(q=0.7),
        num_classes=10,
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(task.teacher.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    dm = DigitsDataModule(batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    logits = task.model(batch["x"])
    with torch.no_grad():
        teacher_logits = trained.eval()(batch["x"])
    soft = distillation_loss(logits, teacher_logits, 3.0)
    p_y = logits.softmax(1).gather(1, batch["y"][:, None]).squeeze(1)
    hard = ((1 - p_y**0.7) / 0.7).mean()  # GCE (Zhang & Sabuncu 2018) by hand
    assert float(task.training_loss(logits, batch["y"], batch)) == pytest.approx(
        float(0.7 * soft + 0.3 * hard), rel=1e-5
    )


def test_distilling_with_sam_trains_the_student_only(teacher_checkpoint):
    path, _ = teacher_checkpoint
    L.seed_everything(0, verbose=False)
    teacher = SmallCNN(num_classes=10, in_channels=1, width=8)
    task = DistillationTask(
        MLP(in_features=64, num_classes=10, hidden=[32]),
        teacher=teacher,
        teacher_checkpoint=str(path),
        optimizer=functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)),
        num_classes=10,
        reliability_diagram=False,
    )
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}  # BN running statistics included
    modes = []

    class TeacherMode(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(pl_module.teacher.training)

    trainer = quiet_trainer(
        max_epochs=3,
        callbacks=[TeacherMode()],
    )
    dm = DigitsDataModule(batch_size=64)
    trainer.fit(task, dm)
    assert modes and not any(modes)
    assert not task.train().teacher.training  # also when someone sets the whole task to train mode
    assert all(torch.equal(before[k], v) for k, v in task.teacher.state_dict().items())
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in task.teacher.parameters()}
    assert trainer.test(task, datamodule=dm, verbose=False)[0]["test/acc"] > 0.8  # it learned


def test_a_teacher_checkpoint_that_does_not_fit_is_one_line(teacher_checkpoint):
    path, _ = teacher_checkpoint
    with pytest.raises(ValueError, match=r"model.teacher_checkpoint=.* does not fit model.teacher \(MLP\): missing"):
        DistillationTask(MLP(64, 10), teacher=MLP(64, 10), teacher_checkpoint=str(path), num_classes=10)
    with pytest.raises(ValueError, match="model.teacher_checkpoint: no checkpoint at 'nowhere.ckpt'"):
        DistillationTask(MLP(64, 10), teacher=MLP(64, 10), teacher_checkpoint="nowhere.ckpt", num_classes=10)
    with pytest.raises(ValueError, match=r"model.alpha must lie in \[0, 1\], got 1.5"):
        DistillationTask(MLP(64, 10), teacher=MLP(64, 10), alpha=1.5, num_classes=10)


def test_the_teacher_needs_the_same_classes():
    with pytest.raises(ValueError, match=r"student logits \(2, 10\) and teacher logits \(2, 3\) differ"):
        distillation_loss(torch.zeros(2, 10), torch.zeros(2, 3))


def test_feature_hints_train_a_regressor_to_the_teachers_features(teacher_checkpoint):
    path, _ = teacher_checkpoint
    L.seed_everything(0, verbose=False)
    task = DistillationTask(
        MLP(in_features=64, num_classes=10, hidden=[32]),
        teacher=SmallCNN(num_classes=10, in_channels=1, width=8),
        teacher_checkpoint=str(path),
        features={"net.2": "features.6"},  # the student's hidden ReLU -> the teacher's flattened 2x2 maps (64)
        feature_weight=0.5,
        num_classes=10,
        reliability_diagram=False,
    )
    dm = DigitsDataModule(batch_size=64)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(task, dm)
    regressor = task.regressors["net__2"]
    assert isinstance(regressor, torch.nn.Linear) and regressor.weight.shape == (64, 32)
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(regressor.weight), id(regressor.bias)} <= optimized
    batch = next(iter(dm.train_dataloader()))
    task.eval()
    hidden = torch.relu(task.model.net[1](batch["x"].flatten(1)))
    teacher_features = task.teacher.features(batch["x"])
    logits = task.model(batch["x"])
    with torch.no_grad():
        task.teacher(batch["x"])
    expected = torch.nn.functional.mse_loss(regressor(hidden), teacher_features)
    assert float(task.hint_loss()) == pytest.approx(float(expected), rel=1e-5)
    total = task.training_loss(logits, batch["y"], batch)
    soft = distillation_loss(logits, task.teacher(batch["x"]), 4.0)
    hard = torch.nn.functional.cross_entropy(logits, batch["y"])
    assert float(total) == pytest.approx(float(0.9 * soft + 0.1 * hard + 0.5 * expected), rel=1e-5)


def test_feature_names_and_shapes_that_do_not_fit_are_one_line():
    with pytest.raises(ValueError, match="model.features: the teacher has no module 'layer9'"):
        DistillationTask(MLP(64, 10), teacher=MLP(64, 10), features={"net.1": "layer9"}, num_classes=10)
    task = DistillationTask(
        SmallCNN(num_classes=10, in_channels=1, width=8),
        teacher=MLP(64, 10),
        features={"features.0": "net.2"},
        num_classes=10,
    )
    task._trainer = type("T", (), {"datamodule": type("D", (), {"input_shape": (1, 8, 8)})()})()
    with pytest.raises(ValueError, match=r"student features.0 gives \(8, 8, 8\), teacher net.2 \(128,\)"):
        task.configure_model()
