"""Any labelled Hugging Face ``datasets`` dataset (saved folder or data file) feeds every weak-label module."""

import numpy as np
import pytest
from aipflow_weaksup.binary import BinaryWeakDigitsDataModule
from aipflow_weaksup.data import PUDigitsDataModule, load_labelled
from aipflow_weaksup.multiclass import WeakDigitsDataModule


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """scikit-learn's wine (178 rows, 13 features, 3 classes) as a saved dataset and as a CSV file."""
    import datasets as hf
    from sklearn.datasets import load_wine

    raw = load_wine()
    root = tmp_path_factory.mktemp("wine")
    table = {"features": raw.data.astype(np.float32).tolist(), "label": raw.target.tolist()}
    hf.Dataset.from_dict(table).save_to_disk(str(root / "saved"))
    columns = {f"f{i}": raw.data[:, i].tolist() for i in range(13)} | {"target": raw.target.tolist()}
    hf.Dataset.from_dict(columns).to_csv(str(root / "wine.csv"))
    return root, raw


def test_saved_folder_and_csv_load_the_same_rows(wine):
    root, raw = wine
    x, y = load_labelled(str(root / "saved"), feature_column="features")
    assert x.shape == (178, 13) and np.array_equal(y, raw.target)
    assert np.allclose(x, raw.data, rtol=1e-6)
    x2, y2 = load_labelled(str(root / "wine.csv"), label_column="target")  # numeric columns as features
    assert np.allclose(x2, raw.data, rtol=1e-5) and np.array_equal(y2, raw.target)


def test_weak_modules_on_a_user_dataset(wine):
    root, _ = wine
    saved = dict(dataset=str(root / "saved"), feature_column="features")
    pu = PUDigitsDataModule(positive_classes=[0], n_labeled=20, **saved)
    pu.setup()
    assert pu.train_set.x.shape[1] == 13 and int(pu.train_set.s.sum()) == 20
    assert pu.prior == pytest.approx(float((pu.train_set.y[pu.train_set.s == 0] == 1).float().mean()))
    uu = BinaryWeakDigitsDataModule(setting="uu", positive_classes=[0], theta=0.6, theta2=0.1, **saved)
    uu.setup()
    assert uu.realised["theta"] == pytest.approx(0.6, abs=0.03)
    multi = WeakDigitsDataModule(weak="partial", partial_q=0.3, **saved)
    multi.setup()
    assert multi.num_classes == 3 and multi.train_set.weak.shape[1] == 3


def test_bad_dataset_arguments_name_the_field(wine, monkeypatch):
    import datasets as hf
    import huggingface_hub

    root, _ = wine
    monkeypatch.setattr(hf.config, "HF_HUB_OFFLINE", True)  # no network: fail fast on the unknown hub name
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="data.label_column='y' is not a column"):
        load_labelled(str(root / "saved"), feature_column="features", label_column="y")
    with pytest.raises(ValueError, match="data.feature_column='pixels' is not a column"):
        load_labelled(str(root / "saved"), feature_column="pixels")
    with pytest.raises(ValueError, match="no file at"):
        load_labelled(str(root / "missing.csv"))
    with pytest.raises(ValueError, match="data.dataset='no-such/dataset-here' is not"):
        load_labelled("no-such/dataset-here")


def test_weak_labels_from_a_column_are_checked_against_the_convention(tmp_path):
    import datasets as hf
    from sklearn.datasets import load_wine

    raw = load_wine()
    y = raw.target
    rng = np.random.default_rng(0)
    candidates = [sorted({int(c), int(rng.integers(0, 3))}) for c in y]  # class-index lists holding the truth
    complementary = [int((c + 1) % 3) for c in y]
    base = {"features": raw.data.astype(np.float32).tolist(), "label": y.tolist()}
    hf.Dataset.from_dict(base | {"cands": candidates, "comp": complementary}).save_to_disk(str(tmp_path / "ok"))
    common = dict(dataset=str(tmp_path / "ok"), feature_column="features")
    dm = WeakDigitsDataModule(weak="partial", weak_column="cands", **common)
    dm.setup()
    masks = dm.train_set.weak.numpy()
    assert masks.shape[1] == 3 and (masks[np.arange(len(masks)), dm.train_set.y.numpy()] == 1).all()
    assert dm.mean_set_size == pytest.approx(masks.sum(1).mean())
    comp = WeakDigitsDataModule(weak="complementary", weak_column="comp", **common)
    comp.setup()
    assert (comp.train_set.weak.numpy() == (comp.train_set.y.numpy() + 1) % 3).all()
    bad_candidates = [[(int(c) + 1) % 3] if i == 5 else [int(c)] for i, c in enumerate(y)]
    bad_comp = [int(c) if i == 7 else int((c + 1) % 3) for i, c in enumerate(y)]
    hf.Dataset.from_dict(base | {"cands": bad_candidates, "comp": bad_comp}).save_to_disk(str(tmp_path / "bad"))
    common["dataset"] = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="lacks its true class"):
        WeakDigitsDataModule(weak="partial", weak_column="cands", split_seed=0, **common).setup()
    with pytest.raises(ValueError, match="must exclude its true class"):
        WeakDigitsDataModule(weak="complementary", weak_column="comp", **common).setup()
    with pytest.raises(ValueError, match="data.weak_column='nope' is not a column"):
        WeakDigitsDataModule(weak="partial", weak_column="nope", **common).setup()
    with pytest.raises(ValueError, match="needs a Hugging Face data.dataset"):
        WeakDigitsDataModule(weak="partial", weak_column="cands").setup()


def test_a_non_finite_cell_is_refused_with_its_rows(wine, tmp_path, capsys):
    # one NaN and one inf cell in a user CSV: one line naming the count, the rows and the columns, nothing trained
    import datasets as hf

    from aipflow.cli import main

    root, raw = wine
    data = raw.data.copy()
    data[5, 2], data[40, 7] = np.nan, np.inf
    columns = {f"f{i}": data[:, i].tolist() for i in range(13)} | {"target": raw.target.tolist()}
    path = tmp_path / "dirty.csv"
    hf.Dataset.from_dict(columns).to_csv(str(path))
    with pytest.raises(ValueError) as info:
        PUDigitsDataModule(dataset=str(path), label_column="target", positive_classes=[0], n_labeled=20).setup()
    message = str(info.value)
    assert "2 non-finite feature values (NaN or inf) in 2 rows in columns ['f2', 'f7'] (first rows: 5, 40)" in message
    capsys.readouterr()
    code = main(
        [
            "fit",
            "--config",
            "weaksup/pu_nnpu",
            f"--data.init_args.dataset={path}",
            "--data.init_args.label_column=target",
            "--data.init_args.positive_classes=[0]",
            "--data.init_args.n_labeled=20",
            "--model.init_args.model=MLP",
            "--model.init_args.model.init_args.in_features=13",
            "--model.init_args.model.init_args.num_classes=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("aipflow: error: ValueError: data: ") and "Traceback" not in err
    assert "2 non-finite feature values" in err and len(err.splitlines()) == 2
