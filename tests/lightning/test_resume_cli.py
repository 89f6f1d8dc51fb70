"""Resuming through the command: the shipped recipes (all with dropout > 0) resumed from ``last.ckpt`` equal the
uninterrupted run bit for bit, and ``last.ckpt`` is the last epoch even when the monitored metric got worse."""

import pytest
import torch

from aipflow.cli import main
from aipflow.testing import quiet_trainer

EPOCHS = 3
# each recipe's network has dropout (SmallCNN 0.1, the Co-teaching MLP 0.3): the global torch RNG must be restored
RECIPES = ["sgd", "sam", "bsam", "quickstart", "noisy_coteaching", "weaksup/pu_nnpu"]


def fit(recipe, root, epochs, ckpt_path=None):
    argv = [
        "fit",
        "--config",
        recipe,
        f"--trainer.max_epochs={epochs}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=false",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--test_after_fit=false",
    ]
    if ckpt_path is not None:
        argv.append(f"--ckpt_path={ckpt_path}")
    assert main(argv) == 0
    return root / "checkpoints" / "last.ckpt"


def weights(path):
    checkpoint = torch.load(path, weights_only=True)  # tensors and plain types only, RNG states included
    return checkpoint["epoch"], checkpoint["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_resumed_recipe_equals_the_uninterrupted_run(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    straight = fit(recipe, tmp_path / "straight", EPOCHS)
    interrupted = fit(recipe, tmp_path / "interrupted", EPOCHS - 1)
    epoch, _ = weights(interrupted)
    assert epoch == EPOCHS - 2  # last.ckpt of a 2-epoch run is its epoch index 1, whatever the monitor said
    resumed = fit(recipe, tmp_path / "resumed", EPOCHS, ckpt_path=interrupted)
    (epoch_a, a), (epoch_b, b) = weights(straight), weights(resumed)
    assert epoch_a == epoch_b == EPOCHS - 1
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{recipe}: resumed weights differ in {different}"


def test_every_command_run_gets_a_true_last_checkpoint_and_its_rng_unless_told_otherwise():

    from aipflow.config import rewrite_short_names
    from aipflow.lightning import (
        AutomaticSharpnessAwareTraining,
        ModelCheckpoint,
        NonFiniteGuard,
        RNGStateCheckpoint,
        command_callbacks,
    )

    def built(*configured, enable_checkpointing=None):
        callbacks = command_callbacks(list(configured), enable_checkpointing)
        return quiet_trainer(callbacks=callbacks, enable_checkpointing=enable_checkpointing)

    default = built()  # none configured: aipflow's, not Lightning's default
    assert type(default.checkpoint_callback) is ModelCheckpoint and default.checkpoint_callback.save_last is True
    assert len(default.checkpoint_callbacks) == 1
    assert any(isinstance(c, RNGStateCheckpoint) for c in default.callbacks)
    assert any(isinstance(c, NonFiniteGuard) for c in default.callbacks)
    assert sum(isinstance(c, AutomaticSharpnessAwareTraining) for c in default.callbacks) == 1  # the entry point's
    configured = built(ModelCheckpoint(monitor="val/nll"))
    assert configured.checkpoint_callback.save_last is True and len(configured.checkpoint_callbacks) == 1
    refused = built(ModelCheckpoint(monitor="val/nll", save_last=False))
    assert refused.checkpoint_callback.save_last is False
    assert not built(enable_checkpointing=False).checkpoint_callbacks
    # a config that names Lightning's own class is built as aipflow's (no class is swapped on a live object)
    named = rewrite_short_names({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint"})
    assert named == {"class_path": "aipflow.lightning.checkpoint.ModelCheckpoint"}
