"""aipflow.data.open_dataset: one loader for every Hugging Face source (issue 15's first piece; weaksup reads its
data through it): files of each format, saved datasets with and without splits, image folders, and the errors."""

import pathlib

import numpy as np
import pytest

from aipflow.data import open_dataset


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    import datasets as hf
    from sklearn.datasets import load_wine

    raw = load_wine()
    root = tmp_path_factory.mktemp("sources")
    table = hf.Dataset.from_dict({f"f{i}": raw.data[:, i].tolist() for i in range(13)} | {"label": raw.target.tolist()})
    table.to_csv(str(root / "wine.csv"))
    table.to_json(str(root / "wine.jsonl"))
    table.to_parquet(str(root / "wine.parquet"))
    table.save_to_disk(str(root / "saved"))
    hf.DatasetDict({"train": table.select(range(150)), "test": table.select(range(150, 178))}).save_to_disk(
        str(root / "saved_splits")
    )
    return root, raw


@pytest.mark.parametrize("name", ["wine.csv", "wine.jsonl", "wine.parquet", "saved"])
def test_files_and_saved_folders_give_the_same_rows(wine, name):
    root, raw = wine
    splits = open_dataset(str(root / name))
    assert list(splits) == ["train"]
    train = splits["train"]
    assert np.array_equal(np.asarray(train["label"]), raw.target)
    assert np.allclose(np.asarray(train["f3"], dtype=np.float64), raw.data[:, 3], rtol=1e-6)


def test_a_saved_dataset_dict_keeps_its_splits(wine):
    root, _ = wine
    splits = open_dataset(str(root / "saved_splits"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 150, "test": 28}


def test_an_image_folder_gives_lazily_decoded_images_and_class_labels(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for split, rows in (("train", range(0, 60)), ("test", range(60, 80))):
        for i in rows:
            folder = tmp_path / "digits" / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 15.9).astype(np.uint8)).save(folder / f"{i}.png")
    splits = open_dataset(str(tmp_path / "digits"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 60, "test": 20}
    first = splits["train"][0]
    assert first["image"].size == (8, 8)  # a PIL image, decoded on access
    names = splits["train"].features["label"].names
    assert sorted(names) == sorted({str(t) for t in digits.target[:60]})


def test_an_image_folders_metadata_adds_columns_row_by_row_and_refuses_gaps(tmp_path):
    import pandas as pd

    from aipflow.data.examples import write_digits_image_folder

    folder = write_digits_image_folder(tmp_path / "digits", per_class=3)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    crowd = {name: f"c{i}" for i, name in enumerate(files)}
    rows = list(reversed(files))  # the metadata's order is not the folder's
    pd.DataFrame({"file_name": rows, "crowd": [crowd[n] for n in rows]}).to_csv(folder / "metadata.csv", index=False)
    train = open_dataset(str(folder))["train"]
    names = train.features["label"].names
    for row in train:  # each image's own metadata row (the image's path gives its name)
        name = str(pathlib.Path(row["image"].filename).relative_to(folder))
        assert row["crowd"] == crowd[name] and names[row["label"]] == name.split("/")[0]
    pd.DataFrame({"file_name": rows[1:], "crowd": 1}).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"metadata.csv has no row for 1 image\(s\), e.g. '9/"):
        open_dataset(str(folder))
    pd.DataFrame({"file_name": rows, "label": 1}).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'label' clashes with the folder's own"):
        open_dataset(str(folder))


def test_bad_sources_are_one_clear_line(tmp_path, monkeypatch):
    import datasets as hf
    import huggingface_hub

    monkeypatch.setattr(hf.config, "HF_HUB_OFFLINE", True)  # no network: fail fast on the unknown hub name
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"data.source: no file at '.*missing.csv'"):
        open_dataset(str(tmp_path / "missing.csv"), field="data.source")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no data here")
    with pytest.raises(
        ValueError, match="is a folder but neither a saved dataset .* an image folder nor a text folder"
    ):
        open_dataset(str(tmp_path / "notes"))
    with pytest.raises(ValueError, match="data.dataset='no-such/dataset-here' is not a saved dataset folder"):
        open_dataset("no-such/dataset-here")
    (tmp_path / "empty.csv").write_text("a,label\n")
    with pytest.raises(ValueError, match="could not be read as csv"):
        open_dataset(str(tmp_path / "empty.csv"))


def test_a_text_folder_is_texts_with_sorted_class_names(tmp_path):
    for name, texts in (("sport", ["a match", "a race"]), ("arts", ["a film"])):
        (tmp_path / "news" / name).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "news" / name / f"{i}.txt").write_text(text)
    (tmp_path / "news" / "arts" / "old.txt").write_bytes("caf\xe9 society".encode("latin-1"))  # not UTF-8
    table = open_dataset(str(tmp_path / "news"), "data.source")["train"]
    assert table.features["label"].names == ["arts", "sport"]  # sorted, whatever order the disk lists
    assert sorted(zip(table["label"], table["text"])) == [
        (0, "a film"),
        (0, "café society"),
        (1, "a match"),
        (1, "a race"),
    ]


def test_package_sources_are_found_without_importing_and_missing_ones_are_one_line():
    from pathlib import Path

    import sklearn

    from aipflow.data.sources import package_path

    folder = package_path("package:sklearn/datasets/data", "data.source")
    assert folder.is_dir() and str(folder).startswith(str(Path(sklearn.__file__).parent))
    with pytest.raises(ValueError, match=r"data.source='package:no_such_pkg/x': no installed package 'no_such_pkg'"):
        open_dataset("package:no_such_pkg/x", "data.source")
    with pytest.raises(ValueError, match=r"the package has no 'nothing/here'"):
        open_dataset("package:sklearn/nothing/here", "data.source")


def test_a_csv_with_bytes_that_are_not_utf8_is_read_with_replacements(tmp_path):
    (tmp_path / "tweets.csv").write_bytes(b"label,text\n0,fine\n1,caf\xe9 \xff night\n")
    with pytest.warns(UserWarning, match="bytes that are not UTF-8 read as U\\+FFFD"):
        table = open_dataset(str(tmp_path / "tweets.csv"), "data.source")["train"]
    assert table["text"] == ["fine", "caf\ufffd \ufffd night"]
