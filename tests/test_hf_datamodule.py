"""HFDataModule: classification on one's own data (a CSV, a saved dataset) with generated label noise or a noisy
label column; splits, label mapping, scaling, and one clear line for each kind of bad input."""

import functools

import numpy as np
import pytest
import torch

from aipflow.data import HFDataModule, LabelNoise
from aipflow.models import MLP
from aipflow.tasks import ClassificationTask
from tests.lightning.helpers import trainer as quiet_trainer

NAMES = np.array(["barolo", "grignolino", "barbera"])


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """Wine as a CSV with class names, a noisy copy of the label (30 % flipped), and an agreement weight."""
    import datasets as hf
    from sklearn.datasets import load_wine

    raw = load_wine()
    rng = np.random.default_rng(0)
    flip = rng.random(len(raw.target)) < 0.3
    noisy = np.where(flip, (raw.target + 1) % 3, raw.target)
    table = {f"f{i}": raw.data[:, i].tolist() for i in range(13)}
    table |= {
        "label": NAMES[raw.target].tolist(),
        "crowd": NAMES[noisy].tolist(),
        "agreement": rng.random(178).tolist(),
    }
    root = tmp_path_factory.mktemp("hfdm")
    hf.Dataset.from_dict(table).to_csv(str(root / "wine.csv"))
    ids = {f"f{i}": raw.data[:, i].tolist() for i in range(13)} | {"label": raw.target.tolist()}
    full = hf.Dataset.from_dict(ids)
    hf.DatasetDict({"train": full.select(range(0, 178, 2)), "test": full.select(range(1, 178, 2))}).save_to_disk(
        str(root / "splits")
    )
    return root, raw, noisy


def test_a_csv_with_class_names_is_split_scaled_and_mapped(wine):
    root, raw, _ = wine
    dm = HFDataModule(str(root / "wine.csv"), feature_columns=[f"f{i}" for i in range(13)])
    dm.setup()
    assert dm.class_names == sorted(NAMES) and dm.num_classes == 3 and dm.num_features == 13
    sizes = {name: len(s) for name, s in dm.sets.items()}
    assert sum(sizes.values()) == 178 and sizes["test"] == pytest.approx(0.2 * 178, abs=1)
    train = dm.sets["train"]
    assert torch.allclose(train.inputs.x.mean(0), torch.zeros(13), atol=1e-5)  # the training split's statistics
    index = {name: i for i, name in enumerate(sorted(NAMES))}
    expected = np.array([index[n] for n in NAMES[raw.target]])
    # stratified: each split has the class proportions of the whole within one row per class
    for split in dm.sets.values():
        counts = np.bincount(split.y.numpy(), minlength=3) / len(split)
        assert np.allclose(counts, np.bincount(expected) / 178, atol=1.5 / len(split) + 0.02)
    assert "carved from train" in dm.split_report and torch.equal(train.y, train.clean_y)


def test_every_split_is_scaled_with_numpys_statistics_of_the_training_rows(wine):
    from sklearn.model_selection import train_test_split

    root, raw, _ = wine
    dm = HFDataModule(str(root / "wine.csv"), feature_columns=[f"f{i}" for i in range(13)], split_seed=4)
    dm.setup()
    # the rows of each split, found the way the documented split is made (test first, then validation), by sklearn
    strata = np.array([sorted(NAMES).index(n) for n in NAMES[raw.target]])
    rest, test = train_test_split(np.arange(178), test_size=0.2, stratify=strata, random_state=4)
    train, val = train_test_split(rest, test_size=0.15 / 0.8, stratify=strata[rest], random_state=4)
    mean, scale = raw.data[train].mean(0), raw.data[train].std(0) + 0.1  # population std, the 0.1 floor
    for name, rows in (("train", train), ("val", val), ("test", test)):  # each split keeps the source's row order
        rows = np.sort(rows)
        got = dm.sets[name].inputs.x.numpy()
        assert np.allclose(got, (raw.data[rows] - mean) / scale, atol=1e-5), name


def test_a_source_with_its_own_test_split_keeps_it(wine):
    root, _, _ = wine
    dm = HFDataModule(str(root / "splits"), val_fraction=0.2)
    dm.setup()
    assert len(dm.sets["test"]) == 89 and len(dm.sets["train"]) + len(dm.sets["val"]) == 89
    assert "the source's own test" in dm.split_report and "validation carved from train" in dm.split_report


def test_generated_noise_hits_the_training_split_only(wine):
    root, _, _ = wine
    dm = HFDataModule(str(root / "wine.csv"), label_noise=LabelNoise("symmetric", 0.4, seed=3))
    dm.setup()
    train = dm.sets["train"]
    assert (train.y != train.clean_y).float().mean().item() == pytest.approx(0.4, abs=0.01)
    assert all(torch.equal(dm.sets[n].y, dm.sets[n].clean_y) for n in ("val", "test"))
    assert dm.noise_report.realised_rate == pytest.approx(0.4, abs=0.01)


def test_a_noisy_label_column_trains_and_the_clean_one_evaluates(wine):
    root, raw, noisy = wine
    dm = HFDataModule(str(root / "wine.csv"), noisy_label_column="crowd", weight_column="agreement")
    dm.setup()
    train = dm.sets["train"]
    realised = (train.y != train.clean_y).float().mean().item()
    assert dm.noise_report.realised_rate == pytest.approx(realised) and 0.2 < realised < 0.4
    # the crowd column moves a class to the next one (the fixture's flip pattern, in either column's names): the
    # matrix is that pattern, each class's off-diagonal entry its flipped share of the training rows (numpy)
    clean, crowd = train.clean_y.numpy(), train.y.numpy()
    assert np.array_equal(crowd[crowd != clean], (clean[crowd != clean] + 1) % 3)
    expected = np.zeros((3, 3))
    for k in range(3):
        flipped = np.mean(crowd[clean == k] != k)
        expected[k, k], expected[k, (k + 1) % 3] = 1 - flipped, flipped
    assert np.allclose(dm.noise_report.transition_matrix.numpy(), expected, atol=1e-12)
    assert "noisy label column" in dm.noise_report.summary()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y", "clean_y", "index", "weight"} and batch["weight"].dtype == torch.float32


@pytest.mark.parametrize(
    "options, message",
    [
        ({"label_column": "target"}, r"data.label_column='target' is not a column of .* \(columns: \['f0'"),
        ({"feature_columns": ["f0", "nope"]}, "data.feature_columns='nope' is not a column"),
        ({"noisy_label_column": "crowd", "label_noise": LabelNoise("symmetric", 0.2)}, "exclude each other"),
        ({"label_column": "f0"}, "data.label_column='f0' must hold class ids"),
    ],
)
def test_bad_options_name_the_field(wine, options, message):
    root, _, _ = wine
    with pytest.raises(ValueError, match=message):
        HFDataModule(str(root / "wine.csv"), **options).setup()


def test_bad_data_is_one_clear_line(tmp_path):
    import datasets as hf

    x = {"a": [0.1, 0.2, 0.3, 0.4] * 10, "b": [1.0, 2.0, 3.0, 4.0] * 10}
    hf.Dataset.from_dict(x | {"label": [0, 1, 2, 5] * 10}).to_csv(str(tmp_path / "range.csv"))
    with pytest.raises(ValueError, match=r"row 3 has label 5, outside \[0, 3\) \(data.num_classes=3; 10 such rows\)"):
        HFDataModule(str(tmp_path / "range.csv"), num_classes=3).setup()
    with pytest.raises(ValueError, match=r"classes \[3, 4\] never occur in the training split"):
        HFDataModule(str(tmp_path / "range.csv")).setup()
    hf.Dataset.from_dict({"a": [float("nan")] + [0.5] * 39, "label": [0, 1] * 20}).to_csv(str(tmp_path / "nan.csv"))
    with pytest.raises(ValueError, match="non-finite"):
        HFDataModule(str(tmp_path / "nan.csv")).setup()
    labels = {"label": ["x", "y"] * 20, "crowd": ["x", "z"] * 20}
    hf.Dataset.from_dict(x | labels).to_csv(str(tmp_path / "classes.csv"))
    with pytest.raises(ValueError, match=r"data.noisy_label_column='crowd' holds classes \['z'\] that the clean"):
        HFDataModule(str(tmp_path / "classes.csv"), noisy_label_column="crowd").setup()


def fit(root, epochs, ckpt_path=None):
    torch.manual_seed(0)
    model = ClassificationTask(
        MLP(in_features=13, num_classes=3, hidden=(32,), dropout=0.2),
        optimizer=functools.partial(torch.optim.AdamW, lr=0.01),
        num_classes=3,
        reliability_diagram=False,
    )
    trainer = quiet_trainer(configure_integration=False, max_epochs=epochs, default_root_dir=root, deterministic=True)
    features = [f"f{i}" for i in range(13)]
    dm = HFDataModule(
        str(root.parent / "wine.csv"), feature_columns=features, label_noise=LabelNoise("symmetric", 0.2), batch_size=16
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer, model, dm


def test_trains_and_resumes_bit_for_bit(wine, tmp_path):
    root, _, _ = wine
    (root / "a").mkdir(exist_ok=True)
    (root / "b").mkdir(exist_ok=True)
    trainer, straight, dm = fit(root / "a", 4)
    accuracy = trainer.test(straight, dm, verbose=False)[0]["test/acc"]
    assert accuracy > 0.85  # wine with 20 % noisy training labels, 4 epochs of an MLP
    first, _, _ = fit(root / "b", 2)
    ckpt = root / "b" / "two.ckpt"
    first.save_checkpoint(ckpt)
    _, resumed, _ = fit(root / "b", 4, ckpt_path=ckpt)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_the_readme_recipe_runs_from_the_command(tmp_path, capsys):
    # README's own-data snippet, pointed at a wine table with a crowd label column (the task and the data module
    # both used to declare num_classes, which Lightning refuses to merge)
    import datasets as hf
    from sklearn.datasets import load_wine

    from aipflow.cli import main
    from tests.test_plugin_kit import ROOT

    text = (ROOT / "README.md").read_text()
    snippet = text[text.index("```yaml\n") + 8 :].split("\n```", 1)[0]
    (tmp_path / "recipe.yaml").write_text(snippet)
    raw = load_wine()
    noisy = (raw.target + (np.arange(178) % 5 == 0)) % 3
    table = {f"f{i}": raw.data[:, i].tolist() for i in range(13)}
    hf.Dataset.from_dict(table | {"label": raw.target.tolist(), "crowd_label": noisy.tolist()}).to_csv(
        str(tmp_path / "my_table.csv")
    )
    argv = ["fit", "--config", str(tmp_path / "recipe.yaml"), f"--data.init_args.source={tmp_path / 'my_table.csv'}"]
    argv += ["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    assert "aipflow run summary" in capsys.readouterr().out


class RowRecorder(ClassificationTask):
    """Saves, per rank, the dataset indices of every training row it received."""

    def __init__(self, out_dir):
        super().__init__(MLP(in_features=13, num_classes=3, hidden=(16,)), num_classes=3, reliability_diagram=False)
        self.out_dir = out_dir
        self.rows = []

    def training_step(self, batch, batch_idx):
        self.rows += batch["index"].tolist()
        return super().training_step(batch, batch_idx)

    def on_train_end(self):
        torch.save(self.rows, f"{self.out_dir}/rows{self.global_rank}.pt")


@pytest.mark.slow
def test_two_processes_share_the_training_split_without_overlap(wine, tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    root, _, _ = wine
    features = [f"f{i}" for i in range(13)]
    dm = HFDataModule(str(root / "wine.csv"), feature_columns=features, batch_size=8)
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    trainer = quiet_trainer(configure_integration=False, devices=2, strategy=strategy)
    trainer.fit(RowRecorder(str(tmp_path)), dm)
    rows = [torch.load(tmp_path / f"rows{r}.pt") for r in (0, 1)]
    # each rank its own half: Lightning's distributed sampler (not one rank's copy of the whole); it pads an odd
    # split by repeating one row
    assert len(set(rows[0]) & set(rows[1])) <= 1 and abs(len(rows[0]) - len(rows[1])) == 0
    dm.setup()
    assert len(set(rows[0]) | set(rows[1])) == len(dm.sets["train"])


def test_predict_source_is_prepared_as_the_test_split(wine, tmp_path):
    import datasets as hf

    root, _, _ = wine
    features = [f"f{i}" for i in range(13)]
    dm = HFDataModule(str(root / "wine.csv"), feature_columns=features, predict_source=str(tmp_path / "new.csv"))
    dm.setup()
    table = hf.load_dataset("csv", data_files=str(root / "wine.csv"))["train"]
    # three raw rows of the file, without their label: scaled with the training split's statistics
    hf.Dataset.from_dict({f: table[f][:3] for f in features}).to_csv(str(tmp_path / "new.csv"))
    batch = next(iter(dm.predict_dataloader()))
    mean, scale = dm._scale
    raw = np.array([[table[f][i] for f in features] for i in range(3)], dtype=np.float32)
    assert torch.allclose(batch["x"], torch.from_numpy((raw - mean) / scale).float(), atol=1e-5)
    assert batch["y"].tolist() == [-1, -1, -1]


def test_a_weight_column_weights_each_rows_loss(wine):
    from aipflow.losses import ELR, GCE

    root, _, _ = wine
    features = [f"f{i}" for i in range(13)]
    dm = HFDataModule(str(root / "wine.csv"), feature_columns=features, weight_column="agreement", batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    net = MLP(in_features=13, num_classes=3, hidden=(8,))
    logits = net(batch["x"])
    w = batch["weight"].double()
    for loss, per_row in (
        (None, torch.nn.functional.cross_entropy(logits.double(), batch["y"], reduction="none")),
        (GCE(q=0.7), (1 - logits.double().softmax(1).gather(1, batch["y"][:, None]).squeeze(1) ** 0.7) / 0.7),
    ):
        task = ClassificationTask(net, loss=loss, num_classes=3, sample_weights=True, reliability_diagram=False)
        expected = (w * per_row).sum() / w.sum()
        assert float(task.training_loss(logits, batch["y"], batch)) == pytest.approx(float(expected), rel=1e-5)
        assert task.loss_fn.reduction == "mean"  # put back after the call
    unweighted = ClassificationTask(net, num_classes=3, reliability_diagram=False)  # sample_weights off: plain mean
    plain = torch.nn.functional.cross_entropy(logits, batch["y"])
    assert float(unweighted.training_loss(logits, batch["y"], batch)) == pytest.approx(float(plain))
    elr = ClassificationTask(net, loss=ELR(num_samples=200), num_classes=3, sample_weights=True)
    with pytest.raises(ValueError, match="model.sample_weights: ELR keeps per-sample state"):
        elr.training_loss(logits, batch["y"], batch)


def test_rows_without_a_weight_are_refused_or_given_weight_missing(tmp_path):
    import datasets as hf

    x = {f"f{i}": np.arange(20.0).tolist() for i in range(2)}
    agreement = [float("nan") if i % 5 == 0 else 0.8 for i in range(20)]
    hf.Dataset.from_dict(x | {"label": [0, 1] * 10, "agreement": agreement}).to_csv(str(tmp_path / "w.csv"))
    with pytest.raises(ValueError, match=r"data.weight_column='agreement' has \d+ non-finite"):
        HFDataModule(str(tmp_path / "w.csv"), weight_column="agreement").setup()
    dm = HFDataModule(str(tmp_path / "w.csv"), weight_column="agreement", weight_missing=0.5)
    dm.setup()
    weights = torch.cat([dm.sets[n].weight for n in ("train", "val", "test")])
    assert sorted(set(weights.tolist())) == [0.5, pytest.approx(0.8)] and int((weights == 0.5).sum()) == 4
