"""Label issues: the confident joint against cleanlab's, detection of rows a known generator corrupted, the batched
path against the in-memory one, the files (CSV, summary, review page) and acting on them (exclude / relabel by row
id in both core data modules, prune-and-retrain inside fit, exact resume); bad input is one line each."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from aipflow.data import DigitsDataModule, LabelNoise
from aipflow.data.curation import Curation
from aipflow.label_issues import (
    ISSUE_COLUMNS,
    check_probabilities,
    confident_joint,
    find_label_issues,
    read_label_issues,
    write_label_issues,
)


def noisy_problem(n=3000, k=5, rate=0.2, confidence=0.8, seed=0):
    """A model that puts ``confidence`` on each row's true class (the rest spread at random) and labels with
    ``rate`` of them moved to another class: the corrupted rows are known."""
    g = np.random.default_rng(seed)
    clean = g.integers(0, k, n)
    rest = g.dirichlet(np.ones(k - 1), n) * (1 - confidence)
    probs = np.zeros((n, k))
    for i in range(n):
        others = [c for c in range(k) if c != clean[i]]
        probs[i, others] = rest[i]
        probs[i, clean[i]] = confidence
    given = clean.copy()
    flipped = g.choice(n, int(rate * n), replace=False)
    given[flipped] = (clean[flipped] + g.integers(1, k, len(flipped))) % k
    return probs, given, np.isin(np.arange(n), flipped)


def test_the_confident_joint_is_cleanlabs_up_to_its_integer_rounding():
    from cleanlab.count import compute_confident_joint, estimate_joint

    g = np.random.default_rng(3)
    probs = g.dirichlet(np.full(4, 0.6), 800)
    labels = np.where(g.random(800) < 0.7, probs.argmax(1), g.integers(0, 4, 800))
    ours = confident_joint(probs, labels)  # counts, the paper's fractions times N
    theirs = compute_confident_joint(labels, probs, calibrate=True)  # cleanlab rounds, keeping the row totals
    assert np.abs(ours - theirs).max() < 1.0 + 1e-9
    np.testing.assert_allclose(ours.sum(1), np.bincount(labels, minlength=4))  # rows: the given labels' counts
    np.testing.assert_allclose(ours / len(labels), estimate_joint(labels, probs), atol=1.0 / len(labels))


def test_the_corrupted_rows_are_found_and_ranked_first():
    probs, given, flipped = noisy_problem()
    issues = find_label_issues(probs, given)
    precision = (issues.is_issue & flipped).sum() / issues.is_issue.sum()
    recall = (issues.is_issue & flipped).sum() / flipped.sum()
    assert precision > 0.97 and recall > 0.97
    assert abs(issues.noise_rate - 0.2) < 0.02
    worst = issues.ranked()[: flipped.sum()]
    assert flipped[worst].mean() > 0.97  # the lowest scores are the flipped rows
    np.testing.assert_allclose(issues.score, probs[np.arange(len(given)), given])  # self-confidence, by definition
    t = issues.transition_matrix
    np.testing.assert_allclose(t.sum(1), 1.0)
    clean = probs.argmax(1)  # the model is right about every row
    realised = np.array([[np.mean(given[clean == i] == j) for j in range(5)] for i in range(5)])
    np.testing.assert_allclose(t, realised, atol=0.01)


def test_the_batched_path_reads_a_memory_map_and_agrees_with_itself_at_any_batch_size(tmp_path):
    probs, given, flipped = noisy_problem(n=2000)
    path = tmp_path / "probs.npy"
    np.save(path, probs.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    small = find_label_issues(mapped, given, batch_size=128)
    whole = find_label_issues(mapped, given, batch_size=len(given))
    np.testing.assert_array_equal(small.is_issue, whole.is_issue)
    np.testing.assert_allclose(small.score, whole.score)
    f1 = 2 * (small.is_issue & flipped).sum() / (small.is_issue.sum() + flipped.sum())
    assert f1 > 0.95 and small.joint is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, y: (p[:, :4], y), r"labels: row \d+ has label 4, outside \[0, 4\)"),
        (lambda p, y: (p * 1.1, y), r"probabilities: row 0 sums to 1.1, expected 1"),
        (lambda p, y: (np.where(np.arange(5) == 2, np.nan, p), y), r"probabilities: row 0 is not finite"),
        (lambda p, y: (p, np.where(y == 3, 0, y)), r"labels: class 3 has no rows \(of 5 classes\)"),
        (lambda p, y: (p, y[:-1]), r"labels: expected 3000 labels \(one per row of probabilities\)"),
        (lambda p, y: (p[:0], y[:0]), r"probabilities: no rows"),
    ],
)
def test_bad_probabilities_are_one_line(change, message):
    probs, given, _ = noisy_problem()
    bad_probs, bad_labels = change(probs, given)
    with pytest.raises(ValueError, match=message):
        find_label_issues(bad_probs, bad_labels)


def test_a_class_count_that_contradicts_the_names_is_one_line():
    probs, given, _ = noisy_problem()
    with pytest.raises(ValueError, match=r"probabilities: 5 columns \(classes\), expected 3"):
        check_probabilities(probs, given, num_classes=3)


def test_the_files_rank_worst_first_spell_the_classes_and_are_never_half_written(tmp_path):
    probs, given, _ = noisy_problem(n=400, k=3)
    names = ["cat", "dog", "eel"]
    issues = find_label_issues(probs, given, row_ids=np.arange(1000, 1400), class_names=names)
    written = write_label_issues(issues, tmp_path, title="t")
    assert set(written) == {
        "label_issues.csv",
        "label_issues_summary.txt",
        "label_issues_summary.json",
        "label_issues.html",
    }
    assert not list(tmp_path.glob(".*partial"))
    with open(tmp_path / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == ISSUE_COLUMNS and len(rows) == 400
    scores = [float(r["label_score"]) for r in rows]
    assert scores == sorted(scores)
    assert {r["given_label"] for r in rows} <= set(names) and int(rows[0]["row"]) >= 1000
    flagged = sum(r["is_label_issue"] == "True" for r in rows)
    assert (
        flagged == issues.num_issues
        and f"{flagged} of 400 rows flagged" in written["label_issues_summary.txt"].read_text()
    )
    assert read_label_issues(tmp_path / "label_issues.csv")[0]["label_score"] == scores[0]
    (tmp_path / "other.csv").write_text("row,label\n1,2\n")
    with pytest.raises(ValueError, match=r"data.exclude_rows: .*other.csv' lacks the column\(s\) \['given_label'"):
        Curation.of(exclude_rows=str(tmp_path / "other.csv"))


def test_digits_leave_out_and_relabel_rows_by_their_id_and_refuse_ids_they_do_not_have(tmp_path):
    full = DigitsDataModule(flatten=True)
    full.setup()
    ids = full.train_row_ids
    assert len(ids) == len(full.train_set) and len(set(ids.tolist())) == len(ids)
    dropped, changed = [int(ids[0]), int(ids[5])], int(ids[9])
    dm = DigitsDataModule(flatten=True, exclude_rows=dropped, relabel={changed: 3})
    dm.setup()
    assert len(dm.train_set) == len(full.train_set) - 2 and not set(dropped) & set(dm.train_row_ids.tolist())
    position = dm.train_row_ids.tolist().index(changed)
    assert int(dm.train_set[position]["y"]) == 3
    assert torch.equal(dm.train_set[position]["x"], full.train_set[9]["x"])  # the row itself, relabelled
    missing = int(np.setdiff1d(np.arange(1797), ids)[0])  # a validation or test row
    with pytest.raises(ValueError, match=rf"data.exclude_rows: row {missing} is not a training row of this data"):
        DigitsDataModule(exclude_rows=[missing]).setup()


def test_down_weighting_scales_the_rows_loss_weights_by_id_and_the_loss_follows(tmp_path, monkeypatch):
    import aipflow.lightning.label_issue_pruning as pruning
    from aipflow.label_issues import LabelIssues
    from aipflow.lightning import LabelIssuePruning
    from aipflow.models import MLP
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    full = DigitsDataModule(flatten=True)
    full.setup()
    ids = full.train_row_ids
    curated, kept = Curation(weights={int(ids[3]): 0.25, int(ids[7]): 0.0}).apply(full.train_set, ids)
    weight = curated.weight
    assert weight[3] == 0.25 and weight[7] == 0.0 and weight.sum() == len(ids) - 2 + 0.25 and len(kept) == len(ids)
    twice, _ = Curation(weights={int(ids[3]): 0.5}).apply(curated, kept)  # a factor on the row's own weight
    assert twice.weight[3] == 0.125 and twice.weight[7] == 0.0
    with pytest.raises(ValueError, match=r"curation.weights: row .* has weight -1.0, expected a number >= 0"):
        Curation(weights={int(ids[0]): -1.0}).apply(full.train_set, ids)

    # the callback: the flagged rows' weights are their label scores, and the training loss is the weighted mean
    n = len(ids)
    score = np.linspace(0.01, 1.0, n)
    flagged = np.zeros(n, dtype=bool)
    flagged[:40] = True  # the 40 lowest scores
    labels = full.train_set.y.numpy()
    probs = np.full((n, 10), 0.1)
    issues = LabelIssues(
        row_ids=ids, given=labels, predicted=labels, score=score, is_issue=flagged, joint=None, num_classes=10
    )
    monkeypatch.setattr(pruning, "search_label_issues", lambda *a: (issues, {}, probs))
    plain = ClassificationTask(MLP(64, 10, hidden=(8,)), num_classes=10)
    with pytest.raises(ValueError, match=r"action='down_weight'\) scales .*\(model.sample_weights: true\)"):
        quiet_trainer(max_epochs=1, callbacks=[LabelIssuePruning(action="down_weight")]).fit(
            plain, DigitsDataModule(flatten=True)
        )
    task = ClassificationTask(MLP(64, 10, hidden=(8,)), num_classes=10, sample_weights=True)
    dm = DigitsDataModule(flatten=True, batch_size=64)
    callback = LabelIssuePruning(action="down_weight")
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(task, dm)
    expected = torch.ones(n, dtype=torch.float64)
    expected[:40] = torch.from_numpy(score[:40])
    assert torch.allclose(dm.train_set.weight.double(), expected)
    assert callback.curation.weights == {int(ids[i]): float(score[i]) for i in range(40)}
    batch = next(iter(torch.utils.data.DataLoader(dm.train_set, batch_size=64)))
    logits = task.model(batch["x"])
    per_row = torch.nn.functional.cross_entropy(logits, batch["y"], reduction="none")
    weighted = (per_row * batch["weight"]).sum() / batch["weight"].sum()
    assert torch.allclose(task.training_loss(logits, batch["y"], batch), weighted, rtol=1e-5)


def test_an_image_folder_relabels_by_class_name_from_the_csv(tmp_path):
    from aipflow.data import HFDataModule, ImageOptions
    from aipflow.data.examples import write_digits_image_folder

    folder = write_digits_image_folder(tmp_path / "digits", per_class=6)
    plain = HFDataModule(str(folder), images=ImageOptions(augment=False), val_fraction=0.2, test_fraction=0.2)
    plain.setup()
    first, names = int(plain.train_row_ids[0]), plain.class_names
    given = names[int(plain.train_set[0]["y"])]
    other = names[(int(plain.train_set[0]["y"]) + 1) % len(names)]
    csv_path = tmp_path / "label_issues.csv"
    csv_path.write_text(
        f"row,given_label,predicted_label,label_score,is_label_issue\n{first},{given},{other},0.01,True\n"
    )
    dm = HFDataModule(
        str(folder), images=ImageOptions(augment=False), val_fraction=0.2, test_fraction=0.2, relabel=str(csv_path)
    )
    dm.setup()
    assert names[int(dm.train_set[0]["y"])] == other and len(dm.train_set) == len(plain.train_set)


def test_prune_and_retrain_inside_fit_removes_the_flagged_rows_and_resumes_without_searching(tmp_path, monkeypatch):
    import aipflow.lightning.label_issue_pruning as pruning
    from aipflow.lightning import IssueSearch, LabelIssuePruning
    from aipflow.models import MLP
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    searches = []
    real = pruning.search_label_issues
    monkeypatch.setattr(pruning, "search_label_issues", lambda *a: searches.append(1) or real(*a))

    def fit(epochs, ckpt=None):
        callback = LabelIssuePruning(IssueSearch(folds=2, epochs=15, batch_size=32))
        task = ClassificationTask(MLP(64, 10, hidden=(32,)), num_classes=10)
        dm = DigitsDataModule(flatten=True, batch_size=128, label_noise=LabelNoise("symmetric", 0.4))
        trainer = quiet_trainer(
            max_epochs=epochs,
            callbacks=[callback],
            enable_checkpointing=True,
            default_root_dir=tmp_path,
            limit_val_batches=1,
        )
        trainer.fit(task, dm, ckpt_path=ckpt)
        return callback, dm, task, trainer

    callback, dm, task, trainer = fit(1)
    flagged = set(callback.curation.exclude_rows)
    report = dm.noise_report
    full = DigitsDataModule(flatten=True, label_noise=LabelNoise("symmetric", 0.4))
    full.setup()
    wrong = {
        int(i) for i, noisy, clean in zip(full.train_row_ids, report.noisy, report.clean, strict=True) if noisy != clean
    }
    assert len(dm.train_set) == len(full.train_set) - len(flagged)
    assert len(flagged & wrong) / len(flagged) > 0.8  # most of what was left out was wrong (40 % noise)
    assert not flagged & set(dm.train_row_ids.tolist())
    assert (tmp_path / "label_issues" / "label_issues.html").exists() or any(tmp_path.rglob("label_issues.html"))
    ckpt = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    stored = torch.load(ckpt, weights_only=True)
    assert searches == [1] and any("curation" in v for v in stored["callbacks"].values())
    resumed, resumed_dm, _, _ = fit(2, ckpt)
    assert searches == [1]  # not searched again
    assert set(resumed.curation.exclude_rows) == flagged and len(resumed_dm.train_set) == len(dm.train_set)


def test_the_page_shows_images_as_thumbnails_and_cannot_be_broken_by_a_text_row():
    import base64
    import io

    from PIL import Image

    from aipflow.label_issues import LabelIssues
    from aipflow.lightning.label_issue_pruning import previews
    from aipflow.review import review_page

    rows = [
        {"x": torch.linspace(0, 1, 64).reshape(1, 8, 8)},
        {"text": "a </script><script>alert(1)</script> b"},
        {"x": torch.arange(20.0)},
    ]
    issues = LabelIssues(
        row_ids=np.array([7, 8, 9]),
        given=np.array([0, 1, 0]),
        predicted=np.array([1, 1, 0]),
        score=np.array([0.1, 0.5, 0.9]),
        is_issue=np.array([True, False, False]),
        joint=None,
        num_classes=2,
    )
    shown = previews(rows, issues)
    thumbnail = Image.open(io.BytesIO(base64.b64decode(shown[7]["image"].split(",", 1)[1])))
    assert thumbnail.size == (8, 8) and thumbnail.getpixel((0, 0)) == 0 and thumbnail.getpixel((7, 7)) == 255
    assert shown[9]["values"].startswith("x0=0, x1=1,") and "(8 more)" in shown[9]["values"]
    page = review_page(issues.records(), shown, "t")
    assert page.count("</script>") == 2  # the page's own two scripts: the text row's is escaped inside the JSON
    assert "<\\/script><script>alert(1)<\\/script>" in page


def test_the_posterior_predictive_of_a_bayesian_cross_fit_averages_draws_and_needs_a_bayesian_optimizer():
    from functools import partial

    from aipflow.lightning import out_of_fold_posteriors
    from aipflow.models import MLP
    from aipflow.optim import IVON
    from aipflow.tasks import ClassificationTask

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    ivon = ClassificationTask(MLP(6, 3, hidden=(8,)), num_classes=3, optimizer=partial(IVON, lr=0.05, hess_init=1.0))
    mean = out_of_fold_posteriors(ivon, x, y, 2, 2, 32, 0)
    drawn = out_of_fold_posteriors(ivon, x, y, 2, 2, 32, 0, posterior_samples=4)
    again = out_of_fold_posteriors(ivon, x, y, 2, 2, 32, 0, posterior_samples=4)
    assert torch.equal(drawn, again)  # seeded draws
    torch.testing.assert_close(drawn.sum(1), torch.ones(120))
    assert (drawn - mean).abs().max() > 1e-3  # the draws move the predictions off the mean weights'
    adamw = ClassificationTask(MLP(6, 3, hidden=(8,)), num_classes=3)
    with pytest.raises(ValueError, match=r"posterior_samples=4 needs a Bayesian optimizer .* the task's is AdamW"):
        out_of_fold_posteriors(adamw, x, y, 2, 1, 32, 0, posterior_samples=4)


def test_streamed_rows_are_read_from_the_dataset_when_a_batch_needs_them_with_the_same_probabilities():
    from aipflow.data import DigitsDataModule, LabelNoise
    from aipflow.lightning import out_of_fold_posteriors
    from aipflow.lightning.cross_fit import training_rows
    from aipflow.models import MLP
    from aipflow.tasks import ClassificationTask

    dm = DigitsDataModule(label_noise=LabelNoise("symmetric", 0.2, seed=0), flatten=True)
    dm.setup()
    reads = []

    class Counted(torch.utils.data.Dataset):
        y = dm.train_set.y

        def __len__(self):
            return len(dm.train_set)

        def __getitem__(self, i):
            reads.append(i)
            return dm.train_set[i]

    streamed, labels = training_rows(Counted(), stream=True)
    assert isinstance(streamed, Counted) and not reads  # nothing read up front: the labels come from the y column
    assert torch.equal(labels, dm.train_set.y)
    held, _ = training_rows(dm.train_set)
    task = ClassificationTask(MLP(64, 10, hidden=(16,)), num_classes=10)
    from_stream = out_of_fold_posteriors(task, streamed, labels, folds=2, epochs=2, batch_size=64, seed=0)
    assert len(reads) == 2 * 2 * len(labels) // 2 + len(labels)  # each fold: 2 epochs over half the rows, then its half
    assert torch.equal(
        from_stream, out_of_fold_posteriors(task, held, labels, folds=2, epochs=2, batch_size=64, seed=0)
    )
