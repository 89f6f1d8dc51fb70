"""The area under the margin (Pleiss et al. 2020) against the paper's equations written out in float64: the
margin (eq. 1), its mean over training (eq. 2), the threshold samples and their percentile; the widened classifier;
what it finds on noisy digits; how it is chosen from a recipe."""

import copy

import numpy as np
import pytest
import torch

from aipflow.lightning import IssueSearch
from aipflow.lightning.area_under_margin import MarginRecord, area_under_margin, margins, threshold_sets
from aipflow.models import MLP, SmallCNN, reinitialize, with_extra_class
from aipflow.tasks import ClassificationTask


def reference_margin(logits, target):
    """Eq. 1 by a loop in float64: the assigned logit minus the largest other one."""
    z = [float(v) for v in logits]
    return z[target] - max(v for j, v in enumerate(z) if j != target)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_the_margin_is_the_assigned_logit_minus_the_largest_other_even_at_extreme_logits(dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    logits[0] = torch.tensor([1e4, -1e4, 0.0, 5.0, 5.0])  # extreme, and a tie among the others
    logits[1] = torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0])  # all equal: margin 0
    logits = logits.to(dtype)
    targets = torch.randint(0, 5, (64,), generator=g)
    targets[0], targets[1] = 1, 3
    got = margins(logits, targets)
    assert got.dtype == torch.float32
    want = torch.tensor([reference_margin(logits[i].float(), int(targets[i])) for i in range(64)])
    assert torch.allclose(got, want, rtol=0, atol=1e-3)
    assert got[0] == -2 * float(logits[0, 0]) and got[1] == 0  # 1e4 in bf16 is 9984


def test_the_aum_is_each_rows_margin_averaged_over_the_epochs_and_the_softmax_over_real_classes():
    record = MarginRecord(rows=3, num_classes=2)
    epochs = [torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]]), torch.tensor([[0.0, 1.0, 4.0], [1.0, 1.0, 0.0]])]
    targets = torch.tensor([0, 2])  # row 2 is a threshold sample: class 2 is the extra one
    for logits in epochs:
        record.update(torch.tensor([0, 2]), logits, targets)
    aum = record.aum()
    assert aum[0].item() == pytest.approx(((2 - 1) + (0 - 4)) / 2)
    assert aum[2].item() == pytest.approx(((-1 - 3) + (0 - 1)) / 2)
    assert torch.isnan(aum[1])  # never trained on
    soft = [np.exp(z[:2]) / np.exp(z[:2]).sum() for z in (np.array([2.0, 0.0]), np.array([0.0, 1.0]))]
    assert np.allclose(record.prob_sum[0].numpy() / 2, (soft[0] + soft[1]) / 2)


def test_threshold_sets_are_disjoint_seeded_and_n_over_c_plus_one_rows():
    sets = threshold_sets(rows=110, num_classes=10, runs=2, seed=4)
    assert [len(s) for s in sets] == [10, 10]
    assert not set(sets[0].tolist()) & set(sets[1].tolist())
    assert all(torch.equal(a, b) for a, b in zip(sets, threshold_sets(110, 10, 2, seed=4)))
    with pytest.raises(ValueError, match="it needs at least 11 rows"):
        threshold_sets(rows=10, num_classes=10, runs=2, seed=0)


@pytest.mark.parametrize(
    "make", [lambda: MLP(6, 4, hidden=(8,)), lambda: SmallCNN(4, 1), lambda: torch.nn.Linear(6, 4)]
)
def test_the_widened_classifier_keeps_the_real_classes_logits_and_adds_one(make):
    torch.manual_seed(0)
    network = make().eval()
    x = torch.randn(5, 6) if not isinstance(network, SmallCNN) else torch.randn(5, 1, 8, 8)
    before = network(x)
    wider = with_extra_class(copy.deepcopy(network), 4).eval()
    after = wider(x)
    assert after.shape == (5, 5) and torch.equal(after[:, :4], before)


def test_a_network_without_a_classifier_of_that_width_is_one_line():
    with pytest.raises(ValueError, match="no nn.Linear layer with 7 outputs"):
        with_extra_class(MLP(6, 4, hidden=(8,)), 7)


def test_with_frozen_weights_the_aum_and_thresholds_are_the_papers_equations_at_the_initial_weights():
    # lr 0: every epoch sees the same logits, so eq. 2 is eq. 1 at the (seeded) initial weights of each run's widened
    # copy, rebuilt here in float64 as the paper defines it: threshold samples labelled c, their 99th percentile
    n, k, seed = 60, 3, 5
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(n) % k
    task = ClassificationTask(MLP(6, k, hidden=(8,)), num_classes=k, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    rows = [{"x": x[i], "y": labels[i]} for i in range(n)]
    got = area_under_margin(task, rows, labels, epochs=3, batch_size=16, seed=seed, percentile=90.0)
    sets = threshold_sets(n, k, 2, seed)
    relative = np.zeros((2, n))
    scored = np.zeros((2, n))
    for r in range(2):
        torch.manual_seed(seed * 1000 + r)
        net = copy.deepcopy(task.model)
        reinitialize(net)
        net = with_extra_class(net, k).double()
        targets = labels.clone()
        targets[sets[r]] = k
        with torch.no_grad():
            z = net(x.double())
        aum = np.array([reference_margin(z[i], int(targets[i])) for i in range(n)])
        threshold = np.percentile(aum[sets[r].numpy()], 90.0)
        assert got.thresholds[r] == pytest.approx(threshold, abs=1e-5)
        mask = np.ones(n, bool)
        mask[sets[r].numpy()] = False
        relative[r, mask], scored[r, mask] = aum[mask] - threshold, 1
    assert (scored.sum(0) >= 1).all()
    assert np.allclose(got.relative, relative.sum(0) / scored.sum(0), atol=1e-5)
    with pytest.warns(UserWarning, match="rows flagged"):  # untrained (lr 0): most rows below the threshold
        issues = got.label_issues(labels.numpy())
    assert np.array_equal(issues.is_issue, got.relative < 0)
    assert np.array_equal(np.argsort(issues.score, kind="stable"), np.argsort(got.relative, kind="stable"))
    moved = (issues.is_issue & (issues.predicted != labels.numpy())).sum()  # flagged with another suggestion
    assert issues.joint.sum() == n and np.trace(issues.joint) == n - moved


def test_on_noisy_digits_it_finds_the_corrupted_rows_and_leaves_the_run_untouched():
    from aipflow.data import DigitsDataModule, LabelNoise

    dm = DigitsDataModule(label_noise=LabelNoise("symmetric", 0.4, seed=0))
    dm.setup()
    train = dm.train_set
    corrupted = (train.y != train.clean_y).numpy()
    torch.manual_seed(0)
    task = ClassificationTask(SmallCNN(10, 1), num_classes=10)
    weights = copy.deepcopy(task.model.state_dict())
    state = torch.get_rng_state()
    rows = [{"x": train.x[i], "y": train.y[i]} for i in range(len(train.y))]
    issues = area_under_margin(task, rows, train.y, epochs=8, batch_size=64, seed=0).label_issues(train.y.numpy())
    hits = (issues.is_issue & corrupted).sum()
    precision, recall = hits / issues.is_issue.sum(), hits / corrupted.sum()
    assert precision > 0.9 and recall > 0.9, (precision, recall)  # measured 0.97 / 0.99 at 15 epochs
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, task.model.state_dict()[n]) for n, v in weights.items())
    assert "area under the margin" in issues.summary() and "(cleanlab)" not in issues.summary()


def test_it_is_chosen_from_a_recipe_and_its_options_are_checked():
    search = IssueSearch.from_strings({"method": "area_under_margin", "aum_percentile": "95", "epochs": "3"})
    assert (search.method, search.aum_percentile, search.epochs) == ("area_under_margin", 95.0, 3)
    assert search.cost_in_fits(6) == pytest.approx(1.0)  # 2 runs x 3 epochs on every row = one 6-epoch fit
    assert IssueSearch(folds=5).cost_in_fits(10) == pytest.approx(4.0)
    for bad, message in [
        ({"method": "aum"}, "issues.method must be one of ('cross_fit', 'area_under_margin'), got 'aum'"),
        ({"aum_runs": 1}, "issues.aum_runs must be >= 2"),
        ({"aum_percentile": 0.0}, "issues.aum_percentile must lie in (0, 100], got 0.0"),
        ({"method": "area_under_margin", "posterior_samples": 4}, "issues.posterior_samples applies to method=cros"),
    ]:
        with pytest.raises(ValueError) as error:
            IssueSearch(**bad)
        assert message in str(error.value)
    with pytest.raises(ValueError, match="--issues.aum_percentile: expected a number, got 'high'"):
        IssueSearch.from_strings({"aum_percentile": "high"})


def test_a_data_module_without_row_ids_is_refused_in_one_line_not_searched_on_its_hidden_labels():
    import lightning as L

    from aipflow.lightning import search_label_issues

    class WeakRows(L.LightningDataModule):  # the shape of a weak-label module: rows with "weak" and a report-only "y"
        def setup(self, stage=None):
            self.train_set = [{"x": torch.zeros(4), "weak": torch.tensor(1), "y": torch.tensor(0)}] * 8

    task = ClassificationTask(MLP(4, 2, hidden=(4,)), num_classes=2)
    with pytest.raises(ValueError, match=r"data: WeakRows does not say which labels its training rows are given"):
        search_label_issues(task, WeakRows(), None, IssueSearch(method="area_under_margin"))


def test_flagging_most_rows_warns_that_the_threshold_samples_did_not_separate():
    from aipflow.lightning.area_under_margin import AreaUnderMargin

    relative = np.array([-0.2, -0.1, -0.3, 0.4])  # 3 of 4 below the threshold: an undertrained run
    result = AreaUnderMargin(relative, np.full((4, 2), 0.5), (0.1, 0.2), (np.array([0]), np.array([1])), 3, 99.0)
    with pytest.warns(UserWarning, match=r"75% of the rows flagged, .* after 3 epochs"):
        result.label_issues(np.array([0, 1, 0, 1]))
    extreme = np.array([0.2, 1e4, 0.3, -1e4])  # an overflowing exp(-x) would warn
    fine = AreaUnderMargin(extreme, np.full((4, 2), 0.5), (0.1, 0.2), (np.array([0]), np.array([1])), 3, 99.0)
    import warnings

    from scipy.special import expit

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        issues = fine.label_issues(np.array([0, 1, 0, 1]))
    assert issues.num_issues == 1 and np.allclose(issues.score, expit(extreme), atol=1e-12)
