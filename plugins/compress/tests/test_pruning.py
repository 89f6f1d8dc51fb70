"""Magnitude pruning against numpy: exactly ``round(s n)`` zeros, the smallest magnitudes (per layer or under one
global threshold), pruned weights staying pruned; the cubic schedule against the paper's formula by hand; gradual
pruning inside fit with SAM and IVON (final sparsity exact, masks only grow, a resumed run equal bit for bit,
checkpoints loading with ``weights_only=True``); the export step; one line for each bad input."""

import functools

import lightning as L
import numpy as np
import pytest
import torch
from aipflow_compress.pruning import (
    GradualMagnitudePruning,
    cubic_sparsity,
    make_permanent,
    prune_magnitude,
    sparsity_of,
)
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from aipflow.data import DigitsDataModule
from aipflow.models import MLP, SmallCNN
from aipflow.optim import IVON, SAM
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3))


def magnitudes(model: nn.Module) -> dict[str, np.ndarray]:
    return {
        name: m.weight.detach().abs().double().numpy().ravel()
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }


def test_layer_scope_zeros_exactly_the_smallest_round_s_n_of_each_layer():
    model = network()
    before = magnitudes(model)
    result = prune_magnitude(model, 0.7, scope="layer")
    for name, values in before.items():
        k = int(round(0.7 * values.size))
        expected = np.ones(values.size, dtype=bool)
        expected[np.argsort(values, kind="stable")[:k]] = False  # numpy's own choice of the k smallest
        weight = model.get_submodule(name).weight.detach().numpy().ravel()
        assert np.array_equal(weight != 0, expected), name
        assert result[name] == pytest.approx(k / values.size)


def test_global_scope_is_one_threshold_over_all_layers():
    model = network()
    before = magnitudes(model)
    prune_magnitude(model, 0.6, scope="global")
    after = magnitudes(model)
    pruned = np.concatenate([before[n][after[n] == 0] for n in before])
    kept = np.concatenate([before[n][after[n] != 0] for n in before])
    total = sum(v.size for v in before.values())
    assert pruned.size == int(round(0.6 * total))
    assert pruned.max() <= kept.min()
    shares = [float((after[n] == 0).mean()) for n in after]
    assert max(shares) - min(shares) > 0.05  # layers end at different sparsities under one threshold


def test_pruned_weights_stay_pruned_and_get_no_gradient():
    model = network()
    prune_magnitude(model, 0.5)
    first = {n: model.get_submodule(n).weight.detach() == 0 for n in magnitudes(model)}
    with torch.no_grad():  # pruned weights grown large in the parameter are not revived by a mask update
        for n, was_zero in first.items():
            model.get_submodule(n).parametrizations.weight.original[was_zero] = 10.0
    prune_magnitude(model, 0.8)
    for n, was_zero in first.items():
        assert (model.get_submodule(n).weight.detach()[was_zero] == 0).all()
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    layer = model.get_submodule("2")
    assert (layer.parametrizations.weight.original.grad[layer.weight.detach() == 0] == 0).all()


def test_the_cubic_schedule_is_zhu_and_gupta_s():
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, by hand for s_i = 0, s_f = 0.9, t0 = 0, n dt = 1000
    schedule = functools.partial(cubic_sparsity, final=0.9, initial=0.0, begin=0, end=1000)
    assert schedule(0) == 0.0
    assert schedule(250) == pytest.approx(0.9 * (1 - 0.75**3))  # 0.5203125
    assert schedule(500) == pytest.approx(0.7875)
    assert schedule(1000) == 0.9 and schedule(5000) == 0.9
    assert cubic_sparsity(150, 0.8, 0.2, 100, 200) == pytest.approx(0.8 - 0.6 * 0.125)


def test_the_export_step_leaves_plain_sparse_weights_and_the_same_outputs():
    model = network()
    prune_magnitude(model, 0.75)
    x = torch.randn(3, 1, 8, 8)
    expected = model(x)
    make_permanent(model)
    assert "2.weight" in model.state_dict() and not any("parametrizations" in k for k in model.state_dict())
    assert torch.equal(model(x), expected)
    assert sum(sparsity_of(model).values()) > 0


class Masks(Callback):
    def __init__(self):
        self.history = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.history.append(
            torch.cat(
                [
                    m.weight.detach().reshape(-1) == 0
                    for m in pl_module.model.modules()
                    if isinstance(m, (nn.Linear, nn.Conv2d))
                ]
            )
        )


def fit_pruned(root, optimizer, epochs, ckpt_path=None, extra=()):
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(
        SmallCNN(num_classes=10, in_channels=1, width=8), optimizer=optimizer, num_classes=10, reliability_diagram=False
    )
    pruning = GradualMagnitudePruning(final_sparsity=0.8, frequency=3, end_step=30)
    trainer = quiet_trainer(
        max_epochs=epochs,
        limit_train_batches=8,
        limit_val_batches=0,
        default_root_dir=root,
        enable_checkpointing=bool(extra),
        callbacks=[pruning, *extra],
    )
    trainer.fit(task, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return trainer, task


OPTIMIZERS = {
    "SAM": functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)),
    "IVON": functools.partial(IVON, lr=0.05),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_gradual_pruning_in_fit_reaches_the_target_and_never_revives(tmp_path, name):
    masks = Masks()
    every_epoch = ModelCheckpoint(tmp_path, "{epoch}", save_top_k=-1)
    _, task = fit_pruned(tmp_path, OPTIMIZERS[name], 5, extra=[masks, every_epoch])
    weights = [m.weight for m in task.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == int(round(0.8 * total))  # global, exact
    for earlier, later in zip(masks.history, masks.history[1:], strict=False):
        assert (later | ~earlier).all()  # a zero stays zero
    checkpoint = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)
    assert any(key.endswith("parametrizations.weight.0.mask") for key in checkpoint["state_dict"])


def test_a_resumed_pruning_run_equals_the_uninterrupted_one(tmp_path):
    optimizer = OPTIMIZERS["SAM"]
    every_epoch = ModelCheckpoint(tmp_path / "a", "{epoch}", save_top_k=-1)
    _, straight = fit_pruned(tmp_path / "a", optimizer, 4, extra=[every_epoch])
    _, resumed = fit_pruned(tmp_path / "b", optimizer, 4, ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: prune_magnitude(network(), 1.0), r"pruning.sparsity must lie in \[0, 1\), got 1.0"),
        (lambda: prune_magnitude(network(), 0.5, include="attention"), "no Linear/Conv1d/Conv2d/Conv3d layer"),
        (lambda: prune_magnitude(network(), 0.5, scope="row"), "pruning.scope must be one of"),
        (lambda: GradualMagnitudePruning(final_sparsity=-0.1), "final_sparsity must lie in"),
        (lambda: GradualMagnitudePruning(0.5, initial_sparsity=0.6), "initial_sparsity .* exceeds final_sparsity"),
        (lambda: GradualMagnitudePruning(end_step=0), "end_step .* must come after begin_step"),
    ],
)
def test_bad_input_is_one_line(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_an_mlp_prunes_per_layer_from_the_core_models():
    model = MLP(in_features=64, num_classes=10, hidden=[32])
    shares = prune_magnitude(model, 0.5, scope="layer")
    assert shares == {"net.1": 0.5, "net.3": 0.5}


def test_a_null_end_step_is_three_quarters_of_the_run_and_a_resume_keeps_the_plan():
    import types

    pruning = GradualMagnitudePruning(final_sparsity=0.5, end_step=None)
    pruning.on_fit_start(types.SimpleNamespace(estimated_stepping_batches=100), None)
    assert pruning.sparsity_at(75) == 0.5 and pruning.sparsity_at(74) < 0.5
    saved = pruning.state_dict()
    resumed = GradualMagnitudePruning(final_sparsity=0.5, end_step=None)
    resumed.load_state_dict(saved)
    resumed.on_fit_start(types.SimpleNamespace(estimated_stepping_batches=400), None)  # max_epochs raised
    assert resumed.sparsity_at(75) == 0.5
