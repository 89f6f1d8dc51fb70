import functools
from pathlib import Path

import pytest
import torch

from aipflow.config import list_recipes
from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.models import MLP
from aipflow.optim import BSAM, IVON, PSGLD, SAM, SGLD
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer

OPTIMIZERS = {
    "SGD": functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    "SAM": functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)),
    "BSAM": functools.partial(BSAM, lr=0.1, num_subbatches=2, seed=5),
    "IVON": functools.partial(IVON, lr=0.1, seed=5),
    "SGLD": functools.partial(SGLD, lr=0.2, seed=5, burn_in=2, thinning=3, max_samples=3),
    "PSGLD": functools.partial(PSGLD, lr=0.002, seed=5, burn_in=2, thinning=3, max_samples=3),
}


def task(name, posterior_samples=0):
    torch.manual_seed(0)
    # dropout draws from the global torch RNG: resuming is exact only if the checkpoint restores it
    return ClassificationTask(
        MLP(hidden=(16,), dropout=0.3),
        optimizer=OPTIMIZERS[name],
        posterior_samples=posterior_samples,
        reliability_diagram=False,
    )


def fit(model, root, epochs, ckpt_path=None):
    trainer = quiet_trainer(
        enable_checkpointing=True, max_epochs=epochs, default_root_dir=root, limit_train_batches=4, limit_val_batches=1
    )
    trainer.fit(model, DigitsDataModule(batch_size=32, label_noise=LabelNoise("symmetric", 0.2)), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("name", ["SGD", "SAM", "BSAM", "IVON", "SGLD", "PSGLD"])
def test_trainer_resume_is_bit_identical(name, tmp_path):
    straight = task(name)
    fit(straight, tmp_path / "a", 3)

    first = task(name)
    trainer = fit(first, tmp_path / "b", 2)
    ckpt = tmp_path / "two_epochs.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = torch.load(ckpt, weights_only=True)  # nothing but tensors and plain types
    assert loaded["optimizer_states"]
    resumed = task(name)
    fit(resumed, tmp_path / "c", 3, ckpt_path=str(ckpt))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    samples = getattr(resumed.trainer.optimizers[0], "samples", None)
    if samples is not None:  # Langevin: the collected posterior samples travel in the checkpoint too
        straight_samples = straight.trainer.optimizers[0].samples
        assert len(samples) == len(straight_samples) == 3
        assert all(torch.equal(a, b) for s, t in zip(samples, straight_samples) for a, b in zip(s, t))


@pytest.mark.parametrize("name", ["BSAM", "IVON", "SGLD"])
def test_posterior_predictive_metrics_are_logged_and_reproducible(name, tmp_path):
    model = task(name, posterior_samples=4)
    trainer = fit(model, tmp_path, 1)
    metrics = trainer.validate(model, DigitsDataModule(batch_size=32), verbose=False)[0]
    again = trainer.validate(model, DigitsDataModule(batch_size=32), verbose=False)[0]
    for key in ("val/pp_acc", "val/pp_nll", "val/pp_ece"):
        assert key in metrics and metrics[key] == again[key]  # fixed evaluation seed
    assert 0.0 < metrics["val/pp_acc"] <= 1.0 and metrics["val/pp_nll"] > 0


def test_posterior_predictive_nll_is_log_mean_exp_of_samples():
    model = task("IVON", posterior_samples=3).eval()  # evaluation mode, as in validation: no dropout
    opt = OPTIMIZERS["IVON"](model.parameters(), ess=100)
    x = torch.randn(5, 1, 8, 8)
    y = torch.randint(0, 10, (5,))
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(3):
        with opt.sampled_params(generator=g):
            samples.append(model(x).softmax(1).double())
    expected = -torch.stack(samples).mean(0).gather(1, y[:, None]).log().mean().item()

    metrics = model.metrics["val_metrics"]
    model._bayesian_optimizer = lambda: opt
    model._posterior_generator = torch.Generator().manual_seed(0)
    model._update_posterior_metrics(metrics, x, y)
    assert metrics["pp_nll"].compute().item() == pytest.approx(expected, rel=1e-5)


def _recipe_files():
    """Every recipe file on disk (the core's folder and each plugin's), named as ``aipflow recipes`` should name
    it: found independently of list_recipes, so a recipe that listing drops or misnames fails here."""
    from aipflow.plugins import get_registry

    files = {}
    for source, folder in get_registry().recipe_dirs():
        for path in Path(folder).glob("*.yaml"):
            files[path.stem if source == "aipflow" else f"{source}/{path.stem}"] = path
    return files


# every recipe fits two steps and reproduces its golden run: tests/test_golden_recipes.py


def test_every_recipe_file_is_listed_once_under_its_name():
    listed = list_recipes()
    assert {k: Path(v).resolve() for k, v in listed.items()} == {
        k: Path(v).resolve() for k, v in _recipe_files().items()
    }
