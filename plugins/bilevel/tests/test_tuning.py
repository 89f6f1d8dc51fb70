"""Hypergradient tuning inside fit: the task's hypergradients of weight decay, label smoothing and the
input-noise augmentation's magnitude equal the implicit-function-theorem formula with the Hessian built densely
from a loss written by hand (float64 softmax regression, the same noise draw); during fit the hyper-parameters
move, are logged, and a resumed run equals the uninterrupted one; bad settings are one line."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from aipflow_bilevel.tuning import HypergradientTask
from torch import nn

from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.testing import quiet_trainer


def linear_task(tune, method="cg", iterations=40):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    return HypergradientTask(
        network,
        tune=tune,
        weight_decay=0.05,
        label_smoothing=0.2,
        input_noise=0.3,
        method=method,
        iterations=iterations,
        neumann_alpha=0.5,
        reliability_diagram=False,
    )


def batches():
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(40, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (40,), generator=g))
    val = (torch.randn(30, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (30,), generator=g))
    return train, val


def dense_ift(task, train, val):
    """-(d^2 L_T / dlambda dw)^T H^-1 dL_V/dw for (log weight decay, smoothing logit, log input noise), H from
    torch.autograd.functional.hessian on a hand-written loss of the flattened weights; the input noise is the task
    generator's first draw (seeded hyper_seed + 1)."""
    layer = task.model[1]
    flat = torch.cat([layer.weight.detach().flatten(), layer.bias.detach()])
    z = torch.randn(train[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float32).double()
    x, y = train[0].flatten(1), train[1]
    z = z.flatten(1)
    xv, yv = val[0].flatten(1), val[1]

    def unpack(v):
        return v[:640].view(10, 64), v[640:]

    def inner(v, hyper):
        w, b = unpack(v)
        log_p = torch.log_softmax((x + torch.exp(hyper[2]) * z) @ w.T + b, 1)
        eps = torch.sigmoid(hyper[1])
        data = ((1 - eps) * -log_p.gather(1, y[:, None]).squeeze(1) + eps * -log_p.mean(1)).mean()
        return data + 0.5 * torch.exp(hyper[0]) * (v * v).sum()

    def outer(v):
        w, b = unpack(v)
        return nn.functional.cross_entropy(xv @ w.T + b, yv)

    hyper = torch.tensor([math.log(0.05), math.log(0.2 / 0.8), math.log(0.3)], dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(lambda v: inner(v, hyper), flat)
    v_outer = torch.autograd.functional.jacobian(outer, flat)
    mixed = torch.autograd.functional.jacobian(
        lambda h: torch.autograd.functional.jacobian(lambda v: inner(v, h), flat, create_graph=True), hyper
    )  # (weights, hyper)
    return (-mixed.T @ torch.linalg.solve(hessian, v_outer)).tolist()


@pytest.mark.parametrize("method, iterations", [("cg", 650), ("neumann", 3000)])
def test_the_tasks_hypergradients_are_the_implicit_function_theorems(method, iterations):
    task = linear_task(["weight_decay", "label_smoothing", "input_noise"], method, iterations)
    task.hparams.neumann_alpha = 1.0
    train, val = batches()
    task.log_weight_decay = task.log_weight_decay.double()
    task.smoothing_logit = task.smoothing_logit.double()
    task.log_input_noise = task.log_input_noise.double()
    decay, smoothing, noise = task.hypergradient(train, val)
    want = dense_ift(task, train, val)
    assert [float(decay), float(smoothing), float(noise)] == pytest.approx(want, rel=1e-6)


def test_inside_fit_the_hyperparameters_move_and_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    def build():
        torch.manual_seed(0)
        return HypergradientTask(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
            tune=["weight_decay", "label_smoothing", "input_noise"],
            method="neumann",
            iterations=5,
            hyper_every=2,
            hyper_lr=0.1,
            optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
            reliability_diagram=False,
        )

    def run(epochs, root, ckpt=None):
        task = build()
        trainer = quiet_trainer(
            max_epochs=epochs, limit_train_batches=4, limit_val_batches=1, default_root_dir=tmp_path / root
        )
        trainer.fit(task, DigitsDataModule(batch_size=32, label_noise=LabelNoise("symmetric", 0.4)), ckpt_path=ckpt)
        return task, trainer

    straight, trainer = run(2, "a")
    assert not torch.equal(straight.log_weight_decay, torch.full((2,), math.log(1e-3)))
    assert "hyper/label_smoothing" in trainer.logged_metrics and "hyper/weight_decay/1" in trainer.logged_metrics
    assert "hyper/input_noise" in trainer.logged_metrics and float(straight.log_input_noise) != math.log(0.1)
    half, trainer = run(1, "b")
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    resumed, _ = run(2, "c", str(path))
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # weights and the tuned hyper-parameters


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match=r"model.tune must list some of \('weight_decay', 'label_smoothing'"):
        HypergradientTask(nn.Linear(2, 2), tune=["dropout"])
    with pytest.raises(ValueError, match="model.method must be one of"):
        HypergradientTask(nn.Linear(2, 2), method="lissa")
    with pytest.raises(ValueError, match=r"model.label_smoothing must lie in \(0, 1\), got 0.0"):
        HypergradientTask(nn.Linear(2, 2), label_smoothing=0.0)


def test_the_hyper_step_moves_each_hyperparameter_against_its_hypergradient():
    """The step the task takes after a batch (Adam's first step: -lr sign(g)) moves log weight decay, the smoothing
    logit and log input noise each against the dense implicit-function-theorem hypergradient, i.e. the way that
    lowers the validation loss to first order: a step that ascended (``tensor.grad = -grad``) fails."""
    import types

    task = linear_task(["weight_decay", "label_smoothing", "input_noise"], "cg", 650)
    train, val = batches()
    want = dense_ift(task, train, val)
    tuned = ("log_weight_decay", "smoothing_logit", "log_input_noise")
    for name in tuned:  # float64 like the network: the hypergradient is then the dense formula's (test above)
        setattr(task, name, getattr(task, name).double())
    task._make_hyper_optimizer()
    task._validation_batch = lambda: val
    task._trainer = types.SimpleNamespace(global_step=0)  # on_train_batch_end reads only the step count
    task.log = lambda *args, **kwargs: None
    before = [float(getattr(task, name)) for name in tuned]
    task.on_train_batch_end(None, train, 0)
    moved = [float(getattr(task, name)) - b for name, b in zip(tuned, before, strict=True)]
    assert all(step * gradient < 0 for step, gradient in zip(moved, want, strict=True)), (moved, want)
