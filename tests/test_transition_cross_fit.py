"""TransitionMatrixEstimation's cross-fitting: out-of-sample posteriors from copies of the task's network, the run's
RNG and weights untouched, the estimate saved and not redone on resume."""

import torch

from aipflow.lightning import TransitionMatrixEstimation, out_of_fold_posteriors
from aipflow.losses import ForwardCorrection
from aipflow.models import MLP
from aipflow.tasks import ClassificationTask
from aipflow.testing import quiet_trainer


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
    from aipflow.data import DigitsDataModule, LabelNoise

    def fit(epochs, ckpt=None):
        torch.manual_seed(0)
        task = ClassificationTask(MLP(hidden=(16,)), loss=ForwardCorrection(num_classes=10), reliability_diagram=False)
        estimator = TransitionMatrixEstimation(warmup_epochs=2, method="confident_joint", cross_fit_folds=2)
        calls = []
        original = estimator._set
        estimator._set = lambda *a: (calls.append(1), original(*a))
        trainer = quiet_trainer(
            enable_checkpointing=True,
            max_epochs=epochs,
            limit_train_batches=2,
            limit_val_batches=1,
            default_root_dir=tmp_path,
            callbacks=[estimator],
        )
        trainer.fit(task, DigitsDataModule(label_noise=LabelNoise("symmetric", 0.2), flatten=True), ckpt_path=ckpt)
        return task, estimator, calls, trainer

    task, estimator, calls, trainer = fit(1)
    assert calls == [1] and not torch.equal(task.loss_fn.transition_matrix, torch.eye(10))
    assert torch.equal(task.loss_fn.transition_matrix, estimator.estimate)
    ckpt = tmp_path / "one.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed_task, resumed, calls, _ = fit(2, ckpt)
    assert calls == [] and torch.equal(resumed.estimate, estimator.estimate)
    assert torch.equal(resumed_task.loss_fn.transition_matrix, estimator.estimate)


def test_reinitialize_redraws_a_network_from_scratch_as_reset_parameters_in_module_order():
    """The fold copies, co-teaching's peer and the PU prior's copies all use reinitialize: for a network from
    scratch it must draw exactly what resetting every module in ``modules()`` order draws (the golden runs hold the
    recipes to it)."""
    import copy

    from aipflow.models import SmallCNN, reinitialize

    network = SmallCNN(num_classes=10, in_channels=1, width=8)
    by_hand, ours = copy.deepcopy(network), copy.deepcopy(network)
    torch.manual_seed(5)
    for module in by_hand.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    torch.manual_seed(5)
    reinitialize(ours)
    assert all(torch.equal(a, b) for a, b in zip(by_hand.state_dict().values(), ours.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), ours.state_dict().values()))


class PretrainedHead(torch.nn.Module):
    """A frozen "pretrained" feature layer and a head: it declares that only the head is re-drawn."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Linear(4, 6).requires_grad_(False)
        self.head = torch.nn.Linear(6, 3)

    def reinitialize_trainable(self) -> None:
        self.head.reset_parameters()

    def forward(self, x):
        return self.head(torch.tanh(self.features(x)))


def test_a_declared_network_keeps_what_it_was_given_even_when_nested():
    import copy

    from aipflow.models import reinitialize

    network = torch.nn.Sequential(torch.nn.Identity(), PretrainedHead())
    fresh = copy.deepcopy(network)
    reinitialize(fresh)
    assert torch.equal(fresh[1].features.weight, network[1].features.weight)
    assert not torch.equal(fresh[1].head.weight, network[1].head.weight)


def test_fold_copies_train_what_the_run_trains():
    """Each copy's optimizer gets the copy's trainable parameters only (IVON would otherwise sample noise on the
    frozen weights), never the task's own."""
    from aipflow.optim import IVON

    torch.manual_seed(0)
    network = PretrainedHead()
    given = []

    def factory(params):
        params = list(params)
        given.append(params)
        return IVON(params, lr=0.05, ess=40)

    task = ClassificationTask(network, num_classes=3, optimizer=factory)
    x, labels = torch.randn(40, 4), torch.randint(0, 3, (40,))
    out_of_fold_posteriors(task, x, labels, folds=2, epochs=2, batch_size=8, seed=0)
    assert len(given) == 2 and all(len(params) == 2 and all(p.requires_grad for p in params) for params in given)
    assert all(p.shape in ((3, 6), (3,)) for params in given for p in params)  # the head's weight and bias
    assert not {id(p) for params in given for p in params} & {id(p) for p in network.parameters()}


def test_a_pretrained_timm_model_keeps_its_backbone_and_redraws_its_classifier():
    """TimmModel with weights (``pretrained`` or ``checkpoint_path``; set by hand here: nothing downloads) keeps
    every backbone tensor in a fresh copy and re-draws the classifier; from scratch it re-draws everything."""
    import copy

    from aipflow.models import TimmModel, reinitialize

    torch.manual_seed(0)
    network = TimmModel("resnet18", num_classes=3, in_chans=1)
    for pretrained in (True, False):
        network.pretrained = pretrained
        torch.manual_seed(1)
        fresh = copy.deepcopy(network)
        reinitialize(fresh)
        before, after = network.state_dict(), fresh.state_dict()
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        if pretrained:
            assert changed == {"model.fc.weight", "model.fc.bias"}
        else:
            assert {"model.conv1.weight", "model.fc.weight", "model.layer4.1.conv2.weight"} <= changed
