import pytest
import torch
from aipflow_weaksup.data import PUDigitsDataModule
from aipflow_weaksup.risks import PURisk
from aipflow_weaksup.task import WeakBinaryTask

from aipflow.models import MLP
from aipflow.testing import quiet_trainer


def test_pu_digits_records_the_unlabelled_prior_and_stratifies_batches():
    dm = PUDigitsDataModule(n_labeled=100, batch_size=64)
    dm.setup()
    s, y = dm.train_set.s, dm.train_set.y
    assert int(s.sum()) == 100 and bool((y[s == 1] == 1).all())  # labelled ones are positives
    assert dm.prior == pytest.approx(float((y[s == 0] == 1).float().mean()))
    batches = list(dm.train_dataloader())
    assert all(int(b["s"].sum()) >= 1 and int((b["s"] == 0).sum()) >= 1 for b in batches)
    assert sum(len(b["s"]) for b in batches) == len(s)


def test_one_sample_convention_uses_the_whole_set_as_unlabelled():
    two = PUDigitsDataModule(n_labeled=100, setting="two_sample")
    one = PUDigitsDataModule(n_labeled=100, setting="one_sample")
    two.setup()
    one.setup()
    n = len(two.train_set)
    s, y, x = one.train_set.s, one.train_set.y, one.train_set.x
    assert int((s == 0).sum()) == n and int(s.sum()) == 100  # U = all n training samples
    assert one.prior == pytest.approx(float((two.train_set.y == 1).float().mean()))  # the marginal's prior
    assert one.prior == pytest.approx(float((y[s == 0] == 1).float().mean()))
    assert one.prior > two.prior  # two-sample U lacks the labelled positives
    labelled = {tuple(row.tolist()) for row in x[s == 1]}
    unlabelled = {tuple(row.tolist()) for row in x[s == 0]}
    assert labelled <= unlabelled


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_labeled": 5000}, "leaves no unlabelled positives"),
        ({"setting": "censoring"}, "data.setting must be one of"),
    ],
)
def test_data_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PUDigitsDataModule(**kwargs).setup()


def fit(risk, epochs=2):
    torch.manual_seed(0)
    task = WeakBinaryTask(MLP(in_features=64, num_classes=1, hidden=(32,)), risk)
    trainer = quiet_trainer(max_epochs=epochs)
    dm = PUDigitsDataModule(batch_size=128)
    trainer.fit(task, dm)
    after_fit = dict(trainer.callback_metrics)
    trainer.test(task, dm, verbose=False)
    return task, trainer, {**after_fit, **trainer.callback_metrics}


def test_nnpu_task_learns_from_positive_and_unlabelled_data():
    task, trainer, metrics = fit(PURisk(estimator="nnpu"), epochs=5)
    assert task.risk.prior == pytest.approx(trainer.datamodule.prior)  # filled from the data
    assert metrics["test/error"].item() < 0.3
    for key in ("val/weak_risk", "val/weak_risk_zero_one", "train/objective", "train/risk"):
        assert key in metrics


def test_prior_inconsistent_with_the_data():
    with pytest.raises(ValueError, match="inconsistent with the data"):
        fit(PURisk(prior=0.9))


def test_recipes_are_listed_under_the_plugin():
    from aipflow.config import list_recipes
    from aipflow.plugins import reset_registry

    reset_registry()
    recipes = list_recipes()
    assert {"weaksup/pu_nnpu", "weaksup/pu_upu", "weaksup/pu_pn"} <= set(recipes)


def test_prior_auto_estimates_before_training():
    torch.manual_seed(0)
    task = WeakBinaryTask(MLP(in_features=64, num_classes=1, hidden=(16,)), PURisk(), prior_estimator="e1")
    trainer = quiet_trainer(max_epochs=1)
    dm = PUDigitsDataModule()
    trainer.fit(task, dm)
    assert task.prior_estimate is not None and 0.0 < task.risk.prior < 1.0
    assert abs(task.risk.prior - dm.prior) < 0.2  # a linear g on digits: a rough estimate


def test_risk_prior_auto_uses_bbe_with_copies_of_the_model_and_validates_with_the_estimate():
    from aipflow_weaksup.risks.pu import pu_risk

    torch.manual_seed(0)
    task = WeakBinaryTask(MLP(in_features=64, num_classes=1, hidden=(32,)), PURisk(prior="auto"))
    trainer = quiet_trainer(max_epochs=1)
    dm = PUDigitsDataModule()
    trainer.fit(task, dm)
    assert task.prior_estimator == "bbe" and task.prior_estimate.method == "bbe"
    assert abs(task.risk.prior - dm.prior) < 0.1  # an MLP scorer on digits (the recipes' CNN: see benchmarks)
    assert trainer.callback_metrics["data/prior_estimate"].item() == pytest.approx(task.risk.prior)
    # model selection uses the estimate, not the validation split's true prior
    val = dm.val_set
    with torch.no_grad():
        weak = pu_risk(task(val.x), val.s, task.risk.prior, "sigmoid", "upu").risk
    assert trainer.callback_metrics["val/weak_risk"].item() == pytest.approx(weak.item(), abs=1e-6)
    assert abs(task.risk.prior - dm.val_prior) > 1e-4
    with pytest.raises(ValueError, match="risk.prior must be a number in \\(0, 1\\), 'auto' or null"):
        PURisk(prior="estimate")


def test_stratified_batch_sampler_rejects_drop_last():
    from aipflow_weaksup.data import StratifiedBatchSampler

    with pytest.raises(ValueError, match="drop_last must be False"):
        StratifiedBatchSampler(range(10), 4, True, groups=torch.tensor([0, 1] * 5))


class _CountingTask(WeakBinaryTask):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"training_step": 0, "before_optimizer_step": 0}

    def training_step(self, batch, batch_idx):
        self.calls["training_step"] += 1
        return super().training_step(batch, batch_idx)

    def on_before_optimizer_step(self, optimizer):
        self.calls["before_optimizer_step"] += 1


@pytest.mark.parametrize("name", ["SAM", "IVON"])
def test_multi_pass_optimizers_are_integrated_in_a_weaksup_task(name):
    # nothing configured: the core's Trainer entry point brings the integration to the plugin's own task
    import functools

    from aipflow.optim import IVON, SAM

    factory = {
        "SAM": functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.05), rho=0.05),
        "IVON": functools.partial(IVON, lr=0.05, mc_samples=2, seed=0),
    }[name]
    torch.manual_seed(0)
    task = _CountingTask(MLP(in_features=64, num_classes=1, hidden=(16,)), PURisk(prior=0.45), optimizer=factory)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(task, PUDigitsDataModule(batch_size=128))
    assert task.calls["training_step"] == 2 * 3  # two passes per step, both really run
    assert task.calls["before_optimizer_step"] == 3  # hooks and logging once per step
    assert all(torch.isfinite(p).all() for p in task.parameters())
