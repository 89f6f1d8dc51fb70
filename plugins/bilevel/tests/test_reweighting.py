"""L2RW and Meta-Weight-Net against references written out independently (float64, softmax regression, whose
per-example gradients are ``(p_i - e_{y_i}) x_i^T``): L2RW's weights are ``max(alpha g_clean . g_i, 0)``
normalised; Meta-Weight-Net's meta-gradient equals central finite differences of the clean loss after the virtual
step written by hand. Inside fit: the weights are computed once per batch (SAM's second pass uses them), sum to
one, the clean rows come from the validation split, batch-norm statistics are not moved by the virtual steps,
and a resumed Meta-Weight-Net run equals the uninterrupted one; bad settings are one line."""

from __future__ import annotations

import functools

import pytest
import torch
from aipflow_bilevel.reweighting import MetaWeightNet, ReweightingTask, l2rw_weights, meta_weight_net_loss
from torch import nn

from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.models import MLP
from aipflow.optim import SAM
from aipflow.testing import quiet_trainer


def ce_rows(logits, y):
    return nn.functional.cross_entropy(logits, y, reduction="none")


def softmax_regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Linear(4, 3).double()
    with torch.no_grad():
        net.weight.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))
        net.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    xc = torch.randn(5, 4, generator=g, dtype=torch.float64)
    yc = torch.randint(0, 3, (5,), generator=g)
    return net, (x, y), (xc, yc)


def example_gradients(weight, bias, x, y):
    """Per row: d l_i / d(W, b) of softmax regression, (p_i - e_{y_i}) x_i^T and p_i - e_{y_i}, by hand."""
    p = torch.softmax(x @ weight.T + bias, 1)
    r = p - nn.functional.one_hot(y, 3).double()
    return r[:, :, None] * x[:, None, :], r


def clean_ce(weight, bias, x, y):
    return nn.functional.cross_entropy(x @ weight.T + bias, y)


def test_l2rw_weights_are_the_normalised_positive_gradient_alignments():
    net, batch, clean = softmax_regression()
    alpha = 0.3
    w, b = net.weight.detach(), net.bias.detach()
    gw, gb = example_gradients(w, b, *batch)
    cw, cb = example_gradients(w, b, *clean)
    clean_w, clean_b = cw.mean(0), cb.mean(0)
    # dL_clean(w - alpha sum eps_i g_i)/d eps_i at eps = 0 is -alpha <g_clean, g_i>
    alignment = alpha * ((gw * clean_w).sum((1, 2)) + (gb * clean_b).sum(1))
    want = alignment.clamp_min(0)
    want = want / want.sum()
    got = l2rw_weights(net, ce_rows, batch, clean, alpha)
    assert (want > 0).any() and (want == 0).any()  # both kinds of rows in this draw
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_meta_weight_net_gradient_equals_finite_differences_of_the_virtual_step_by_hand():
    net, batch, clean = softmax_regression(seed=1)
    torch.manual_seed(0)
    weight_net = MetaWeightNet(hidden=5).double()
    alpha = 0.5
    loss, _ = meta_weight_net_loss(net, weight_net, ce_rows, batch, clean, alpha)
    grads = torch.autograd.grad(loss, list(weight_net.parameters()))
    w, b = net.weight.detach(), net.bias.detach()
    x, y = batch

    def by_hand() -> float:
        with torch.no_grad():
            rows = nn.functional.cross_entropy(x @ w.T + b, y, reduction="none")
            v = weight_net(rows)
            gw, gb = example_gradients(w, b, x, y)
            new_w = w - alpha * (v[:, None, None] * gw).mean(0)
            new_b = b - alpha * (v[:, None] * gb).mean(0)
            return float(clean_ce(new_w, new_b, *clean))

    assert float(loss) == pytest.approx(by_hand(), rel=1e-12)
    step = 1e-6
    for param, grad in zip(weight_net.parameters(), grads, strict=True):
        flat = param.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            original = float(flat[i])
            flat[i] = original + step
            up = by_hand()
            flat[i] = original - step
            down = by_hand()
            flat[i] = original
            assert float(grad.view(-1)[i]) == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-10)


class CountingTask(ReweightingTask):
    calls = 0

    def on_train_batch_start(self, batch, batch_idx):
        CountingTask.calls += 1
        super().on_train_batch_start(batch, batch_idx)


def task(method="l2rw", optimizer=None, cls=ReweightingTask):
    torch.manual_seed(0)
    return cls(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)),
        method=method,
        meta_size=60,
        meta_batch_size=30,
        optimizer=optimizer or functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        reliability_diagram=False,
    )


def data():
    return DigitsDataModule(batch_size=32, label_noise=LabelNoise("symmetric", 0.4))


def test_inside_fit_with_sam_the_weights_come_once_per_batch_and_sum_to_one():
    CountingTask.calls = 0
    sam = functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    model = task("l2rw", sam, CountingTask)
    seen = []
    original = model.training_loss

    def recording(logits, y, batch):
        seen.append(model._row_weights)
        return original(logits, y, batch)

    model.training_loss = recording
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(model, data())
    assert CountingTask.calls == 3 and len(seen) == 6  # two SAM passes per batch, one weighting
    for first, second in zip(seen[::2], seen[1::2], strict=True):
        assert first is second and float(first.sum()) == pytest.approx(1.0)
    dm = trainer.datamodule
    assert len(model._meta_rows) == 60 and int(model._meta_rows.max()) < len(dm.val_dataloader().dataset)


def test_virtual_steps_leave_batch_norm_statistics_alone():
    model = task("mwn")
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    bn = model.model[2]
    calls = []
    bn.register_forward_hook(lambda *args: calls.append(bn.num_batches_tracked.item()))
    trainer.fit(model, data())
    assert bn.num_batches_tracked.item() == 1  # the real training forward only


def test_a_resumed_meta_weight_net_run_equals_the_uninterrupted_one(tmp_path):
    def run(epochs, ckpt=None, root="a"):
        model = task("mwn")
        trainer = quiet_trainer(
            max_epochs=epochs, limit_train_batches=3, limit_val_batches=0, default_root_dir=tmp_path / root
        )
        trainer.fit(model, data(), ckpt_path=ckpt)
        return model, trainer

    straight, _ = run(2)
    half, trainer = run(1, root="b")
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    resumed, _ = run(2, ckpt=str(path), root="c")
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)  # network and weighting network


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="model.method must be one of"):
        ReweightingTask(MLP(), method="mentornet")
    with pytest.raises(ValueError, match="model.meta_size must be >= 1, got 0"):
        ReweightingTask(MLP(), meta_size=0)
    model = ReweightingTask(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), meta_size=5000)
    with pytest.raises(ValueError, match="model.meta_size is 5000 but the validation split has 270 rows"):
        quiet_trainer(max_epochs=1, limit_train_batches=1).fit(model, data())


def test_the_meta_weight_net_step_descends_its_clean_meta_objective():
    """One meta step (Adam on the weighting network, its first step moves each parameter by -lr sign(g)) lowers
    Shu et al.'s meta objective on the same batches: a step that ascended (``p.grad = -g``) raises it."""
    torch.manual_seed(0)
    task = ReweightingTask(MLP(in_features=4, num_classes=3, hidden=(8,)), method="mwn", num_classes=3, virtual_lr=0.5)
    task.setup_meta_optimizer()
    for group in task._meta_optimizer.param_groups:
        group["lr"] = 1e-3  # small: the first-order decrease dominates
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(32, 4, generator=g), "y": torch.randint(0, 3, (32,), generator=g)}
    clean = {"x": torch.randn(16, 4, generator=g), "y": torch.randint(0, 3, (16,), generator=g)}
    task._clean_batch = lambda: clean

    def meta_loss() -> float:
        with torch.enable_grad():
            return float(meta_weight_net_loss(task.model, task.weight_net, task._per_row, batch, clean, 0.5)[0])

    before = meta_loss()
    task.on_train_batch_start(batch, 0)
    after = meta_loss()
    assert after < before, (before, after)


def test_the_reweighted_training_loss_is_the_weighted_sum_of_the_row_losses():
    """``sum_i r_i l_i`` with the batch's weights (sum 1), by hand: a mean in its place would divide by the rows."""
    torch.manual_seed(0)
    task = ReweightingTask(MLP(in_features=4, num_classes=3, hidden=(8,)), num_classes=3)
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    task._row_weights = torch.tensor([0.5, 0.0, 0.25, 0.125, 0.125, 0.0])
    by_hand = sum(
        float(w) * float(nn.functional.cross_entropy(logits[i : i + 1], y[i : i + 1]))
        for i, w in enumerate(task._row_weights)
    )
    assert float(task.training_loss(logits, y, {"x": None, "y": y})) == pytest.approx(by_hand, rel=1e-6)
