"""TransitionMatrixEstimation's cross-fitting: out-of-sample posteriors from copies of the task's network, the run's
RNG and weights untouched, the estimate saved and not redone on resume."""

import lightning as L
import torch

from aipflow.callbacks import TransitionMatrixEstimation, out_of_fold_posteriors
from aipflow.losses import ForwardCorrection
from aipflow.models import MLP
from aipflow.tasks import ClassificationTask


class Memoriser(torch.nn.Module):
    """A network that can only remember rows it was trained on (one free logit vector per row)."""

    def __init__(self, rows: int, classes: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.zeros(rows, classes))

    def reset_parameters(self) -> None:
        torch.nn.init.zeros_(self.table)

    def forward(self, x):
        return self.table[x.long().squeeze(1)]


def test_every_row_is_predicted_by_a_copy_that_never_saw_it():
    n, k = 40, 3
    x = torch.arange(n, dtype=torch.float32)[:, None]  # the input is the row's id
    labels = torch.arange(n) % k
    task = ClassificationTask(Memoriser(n, k), num_classes=k, optimizer=lambda p: torch.optim.SGD(p, lr=5.0))
    probs = out_of_fold_posteriors(task, x, labels, folds=2, epochs=20, batch_size=8, seed=0)
    # a memoriser that never saw a row predicts uniformly there; one that saw it would be near-certain
    assert torch.allclose(probs, torch.full((n, k), 1 / k), atol=1e-6)
    assert torch.equal(task.model.table, torch.zeros(n, k))  # the task's own network untouched


def test_the_run_rng_and_weights_are_untouched_and_the_result_reproducible():
    torch.manual_seed(3)
    task = ClassificationTask(MLP(in_features=4, num_classes=3, hidden=(8,)), num_classes=3)
    before = [p.detach().clone() for p in task.parameters()]
    x, labels = torch.randn(30, 4), torch.randint(0, 3, (30,))
    state = torch.get_rng_state()
    first = out_of_fold_posteriors(task, x, labels, folds=3, epochs=2, batch_size=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before, task.parameters()))
    assert torch.equal(first, out_of_fold_posteriors(task, x, labels, folds=3, epochs=2, batch_size=8, seed=1))


def test_estimated_before_training_saved_and_not_redone_on_resume(tmp_path):
    from aipflow.data import DigitsDataModule

    def fit(epochs, ckpt=None):
        torch.manual_seed(0)
        task = ClassificationTask(MLP(hidden=(16,)), loss=ForwardCorrection(num_classes=10), reliability_diagram=False)
        estimator = TransitionMatrixEstimation(warmup_epochs=2, method="confident_joint", cross_fit_folds=2)
        calls = []
        original = estimator._set
        estimator._set = lambda *a: (calls.append(1), original(*a))
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            limit_train_batches=2,
            limit_val_batches=1,
            default_root_dir=tmp_path,
            callbacks=[estimator],
            enable_model_summary=False,
        )
        trainer.fit(task, DigitsDataModule(noise="symmetric", noise_rate=0.2, flatten=True), ckpt_path=ckpt)
        return task, estimator, calls, trainer

    task, estimator, calls, trainer = fit(1)
    assert calls == [1] and not torch.equal(task.loss_fn.transition_matrix, torch.eye(10))
    assert torch.equal(task.loss_fn.transition_matrix, estimator.estimate)
    ckpt = tmp_path / "one.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed_task, resumed, calls, _ = fit(2, ckpt)
    assert calls == [] and torch.equal(resumed.estimate, estimator.estimate)
    assert torch.equal(resumed_task.loss_fn.transition_matrix, estimator.estimate)
