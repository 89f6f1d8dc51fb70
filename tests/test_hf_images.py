"""HFDataModule on images and text: lazy decoding, the transforms against hand-built references, channel modes,
augmentation that resumes exactly, bad files named by row; and the own-data recipes from the command on an image
folder, a CSV and saved datasets with only ``--data.*`` overrides."""

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aipflow.data import Collator, HFDataModule, ImageOptions, LabelNoise
from aipflow.data.examples import write_digits_image_folder, write_table
from aipflow.models import SmallCNN
from aipflow.tasks import ClassificationTask
from tests.lightning.helpers import trainer as quiet_trainer


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Digits, 12 of each class: a greyscale folder (12 px), a colour one, a CSV of file paths, a saved image
    DatasetDict with its own splits whose validation holds a file that does not decode, a digits CSV."""
    import datasets as hf

    root = tmp_path_factory.mktemp("images")
    grey = write_digits_image_folder(root / "grey", size=12, per_class=12)
    write_digits_image_folder(root / "colour", size=12, mode="RGB", per_class=12)
    files = sorted(grey.rglob("*.png"))
    paths = {"file": [str(p.relative_to(root)) for p in files], "label": [int(p.parent.name) for p in files]}
    hf.Dataset.from_dict(paths).to_csv(str(root / "paths.csv"))
    cells = [{"bytes": p.read_bytes(), "path": None} for p in files]
    labels = paths["label"]
    table = hf.Dataset.from_dict({"image": cells, "label": labels}).cast_column("image", hf.Image())
    broken = hf.Dataset.from_dict(
        {"image": [{"bytes": b"not a png", "path": "broken.png"}, *cells[:9]], "label": labels[:10]}
    ).cast_column("image", hf.Image())
    hf.DatasetDict({"train": table, "validation": broken, "test": table.select(range(0, 120, 4))}).save_to_disk(
        str(root / "saved_broken")
    )
    hf.DatasetDict({"train": table, "test": table.select(range(0, 120, 4))}).save_to_disk(str(root / "saved"))
    write_table("digits", root / "digits.csv")
    return root


def _pixels(path: Path, size: tuple[int, int] | None = None, mode: str = "L") -> np.ndarray:
    image = Image.open(path).convert(mode)
    return np.asarray(image, dtype=np.float64) / 255.0


def test_images_are_decoded_per_row_and_scaled_by_the_training_split(sources):
    dm = HFDataModule(str(sources / "grey"), images=ImageOptions(augment=False), batch_size=16)
    dm.setup()
    assert dm.input_shape == (1, 12, 12) and dm.num_classes == 10 and dm.class_names == [str(c) for c in range(10)]
    assert not any(isinstance(v, torch.Tensor) for v in vars(dm.sets["train"].inputs).values())  # rows in Arrow
    # every training image is in the statistics sample (78 < 256): the reference is numpy over their files
    train_table = dm.sets["train"].inputs.table
    paths = [train_table[i]["image"]["path"] for i in range(len(train_table))]
    pixels = np.stack([_pixels(Path(p)) for p in paths])
    assert dm.image.mean[0] == pytest.approx(pixels.mean(), abs=1e-9)
    assert dm.image.std[0] == pytest.approx(pixels.std(), abs=1e-9)
    val = dm.sets["val"]
    row = val[3]
    expected = (_pixels(Path(val.inputs.table[3]["image"]["path"])) - pixels.mean()) / pixels.std()
    assert torch.allclose(row["x"][0].double(), torch.from_numpy(expected), atol=1e-5)
    assert row["index"] == 3 and row["y"] == row["clean_y"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["x"].shape == (18, 1, 12, 12)  # the whole validation split: 4 x batch_size per batch


def test_a_timm_model_sets_size_interpolation_crop_and_normalisation(sources):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    dm = HFDataModule(
        str(sources / "grey"),
        images=ImageOptions(model="resnet18", size=32, mode="RGB", augment=False),
        num_workers=0,
    )
    dm.setup()
    assert dm.input_shape == (3, 32, 32)
    path = Path(dm.sets["test"].inputs.table[5]["image"]["path"])
    # resnet18's pretrained config: bicubic, crop 0.95 (resize to floor(32 / 0.95) = 33, centre crop 32), ImageNet
    # mean and std; written out by hand here
    image = Image.open(path).convert("RGB")
    image = tvf.center_crop(tvf.resize(image, 33, interpolation=InterpolationMode.BICUBIC), [32, 32])
    expected = tvf.normalize(tvf.to_tensor(image), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.allclose(dm.sets["test"][5]["x"], expected, atol=1e-6)
    grey = HFDataModule(str(sources / "grey"), images=ImageOptions(model="resnet18", size=32))
    grey.setup()
    assert grey.input_shape == (1, 32, 32) and grey.image.mean == pytest.approx((0.449,), abs=1e-3)


def test_colour_and_greyscale_are_detected(sources):
    colour = HFDataModule(str(sources / "colour"), images=ImageOptions(augment=False))
    assert colour.input_shape == (3, 12, 12)
    x = colour.sets["train"][0]["x"]
    assert x.shape == (3, 12, 12) and len(colour.image.mean) == 3
    as_grey = HFDataModule(str(sources / "colour"), images=ImageOptions(mode="L"))
    assert as_grey.input_shape == (1, 12, 12)
    with pytest.raises(ValueError, match=r"data.images.mode must be one of \('RGB', 'L'\)"):
        HFDataModule(str(sources / "grey"), images={"mode": "CMYK"}).setup()


def test_training_images_are_augmented_and_evaluated_ones_are_not(sources):
    dm = HFDataModule(str(sources / "grey"), images=ImageOptions(crop_scale=(0.3, 1.0), hflip=0.5))
    dm.setup()
    torch.manual_seed(0)
    first, second = dm.sets["train"][7]["x"], dm.sets["train"][7]["x"]
    assert not torch.equal(first, second)  # random resized crop, flip, colour jitter
    assert torch.equal(dm.train_set[7]["x"], dm.train_set[7]["x"])  # what monitors read: not augmented
    assert torch.equal(dm.sets["val"][2]["x"], dm.sets["val"][2]["x"])
    plain = HFDataModule(str(sources / "grey"), images=ImageOptions(augment=False))
    plain.setup()
    assert torch.equal(plain.sets["train"][7]["x"], dm.train_set[7]["x"])


def test_a_table_of_image_paths_relative_to_it(sources):
    table = HFDataModule(str(sources / "paths.csv"), images=ImageOptions(column="file", augment=False))
    folder = HFDataModule(str(sources / "grey"), images=ImageOptions(augment=False))
    table.setup()
    folder.setup()
    assert table.input_shape == (1, 12, 12)
    assert table.image.mean == pytest.approx(folder.image.mean, abs=1e-3)  # another sample of the same images
    path = sources / table.sets["test"].inputs.table[0]["file"]
    assert torch.allclose(
        table.sets["test"][0]["x"][0].double(),
        torch.from_numpy((_pixels(path) - table.image.mean[0]) / table.image.std[0]),
        atol=1e-5,
    )


def test_an_image_that_does_not_decode_stops_setup_in_one_line_before_training(sources, capsys):
    dm = HFDataModule(str(sources / "saved_broken"), images=ImageOptions(augment=False))
    expected = (
        r"data.images.column='image': 1 of 10 validation images do not decode, the first: the validation split's "
        r"row 0 \(broken.png\) does not decode as an image"
    )
    with pytest.raises(ValueError, match=expected):
        dm.setup()  # checked before any batch: the broken file is in the source's own validation split
    from aipflow.cli import main

    argv = ["fit", "--config", "noisy_images_nce_rce", f"--data.source={sources / 'saved_broken'}"]
    argv += ["--data.num_workers=1", "--trainer.fast_dev_run=1", "--trainer.logger=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "aipflow: error: ValueError: data.images.column='image': 1 of 10 validation images" in err
    assert "Traceback" not in err


def test_unreadable_images_can_be_left_out_named_with_the_other_rows_keeping_their_ids(sources, tmp_path):
    import shutil

    folder = tmp_path / "folder"
    shutil.copytree(sources / "grey", folder)
    broken = sorted((folder / "3").glob("*.png"))[2]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated: the header reads, the pixels do not
    strict = HFDataModule(str(folder), images=ImageOptions(augment=False), val_fraction=0.1, test_fraction=0.1)
    with pytest.raises(ValueError, match=r"1 of 120 train images do not decode, the first: .*" + broken.name):
        strict.setup()
    whole = HFDataModule(str(sources / "grey"), images=ImageOptions(augment=False), val_fraction=0.1, test_fraction=0.1)
    whole.setup()
    skip = HFDataModule(
        str(folder), images=ImageOptions(augment=False, unreadable="skip"), val_fraction=0.1, test_fraction=0.1
    )
    with pytest.warns(UserWarning, match=r"1 images do not decode and are left out \(train row 38: .*" + broken.name):
        skip.setup()
    assert skip.unreadable_images[0][:2] == ("train", 38)  # class 3's third file: 3 * 12 + 2
    assert sum(len(s) for n, s in skip.sets.items() if n != "train_eval") == 119
    assert 38 not in skip.train_row_ids and set(skip.train_row_ids) <= set(range(120))
    # each kept training row is the source's row with that id: its file is the one in the full folder's listing
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.png"))
    table = skip.sets["train"].inputs.table
    for position in (0, len(table) // 2, len(table) - 1):
        path = Path(table[position]["image"]["path"]).relative_to(folder)
        assert files[int(skip.train_row_ids[position])] == path


class Lengths(Collator):
    """A stand-in tokenizer: each text's length."""

    def check(self, row):
        if not isinstance(row.get("text"), str):
            raise ValueError("data.collator: Lengths needs a text column")

    def __call__(self, rows):
        batch = super().__call__(rows)
        batch["x"] = torch.tensor([len(t) for t in batch["text"]])
        return batch


def test_text_is_passed_through_and_a_collator_can_tokenise(tmp_path):
    import datasets as hf

    words = ["good", "bad", "fine", "awful"] * 15
    hf.Dataset.from_dict({"review": [f"a {w} film" for w in words], "label": [i % 2 for i in range(60)]}).to_csv(
        str(tmp_path / "text.csv")
    )
    dm = HFDataModule(str(tmp_path / "text.csv"), text_column="review", label_noise=LabelNoise("symmetric", 0.2))
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch["text"], list) and all(isinstance(t, str) for t in batch["text"])
    assert "x" not in batch and dm.input_shape is None

    lengths = HFDataModule(str(tmp_path / "text.csv"), text_column="review", collator=Lengths())
    lengths.setup()
    batch = next(iter(lengths.val_dataloader()))
    assert batch["x"].tolist() == [len(t) for t in batch["text"]]
    with pytest.raises(ValueError, match="data.collator: Lengths needs a text column"):
        HFDataModule(str(tmp_path / "text.csv"), feature_columns=["label"], collator=Lengths()).setup()
    with pytest.raises(ValueError, match="data.text_column='label' must hold strings"):
        HFDataModule(str(tmp_path / "text.csv"), text_column="label").setup()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"images": ImageOptions(), "text_column": "t"}, "data.images and data.text_column exclude each other"),
        (
            {"images": ImageOptions(), "label_noise": LabelNoise("instance", 0.2)},
            "data.label_noise.kind='instance' draws flips",
        ),
        ({"images": {"crop_scale": (0.5, 0.2)}}, r"data.images.crop_scale must be"),
        ({"images": {"hflip": 2.0}}, r"data.images.hflip is a probability"),
        ({"images": {"size": 0}}, r"data.images.size must be >= 1, got 0"),
        (
            {"images": {"column": "nope"}},
            r"data.images.column='nope' is not a column .* \(columns: \['image', 'label'\]\)",
        ),
        ({"images": {"model": "resnet_nope"}}, "data.images.model: unknown timm model"),
    ],
)
def test_bad_image_options_are_one_line(sources, options, message):
    with pytest.raises(ValueError, match=message):
        HFDataModule(str(sources / "grey"), **options).setup()


def _fit_images(source, root, epochs, ckpt_path=None, workers=1):
    import lightning as L

    L.seed_everything(0, workers=True, verbose=False)  # python's generator too: timm's crops draw from it
    model = ClassificationTask(
        SmallCNN(num_classes=10, in_channels=1, width=8),
        optimizer=functools.partial(torch.optim.AdamW, lr=0.01),
        num_classes=10,
        reliability_diagram=False,
    )
    trainer = quiet_trainer(configure_integration=False, max_epochs=epochs, default_root_dir=root, deterministic=True)
    dm = HFDataModule(source, images=ImageOptions(crop_scale=(0.5, 1.0)), batch_size=32, num_workers=workers)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer, model


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_augmented_images_resume_bit_for_bit(sources, tmp_path, workers):
    # the workers start each epoch seeded from the main generator, which the checkpoint holds: a resumed run draws
    # the same crops and flips as the uninterrupted one
    source = str(sources / "grey")
    _, straight = _fit_images(source, tmp_path / "a", 3, workers=workers)
    first, _ = _fit_images(source, tmp_path / "b", 1, workers=workers)
    first.save_checkpoint(tmp_path / "one.ckpt")
    _, resumed = _fit_images(source, tmp_path / "b", 3, ckpt_path=tmp_path / "one.ckpt", workers=workers)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_sizes_from_the_data_fill_only_nulls():
    from aipflow.sizes import data_sizes, fill_from_data, require_size

    class Data:
        num_classes, input_shape = 3, (1, 4, 5)

    config = {
        "class_path": "ClassificationTask",
        "init_args": {
            "num_classes": None,
            "model": {"class_path": "MLP", "init_args": {"in_features": None, "num_classes": 7}},
            "loss": {"class_path": "ForwardCorrection", "init_args": {"num_classes": None}},
            "peers": [{"class_path": "TimmModel", "init_args": {"in_chans": None}}],
        },
    }
    sizes = data_sizes(Data())
    assert sizes == {"num_classes": 3, "in_features": 20, "in_chans": 1, "in_channels": 1}
    filled = fill_from_data(config, sizes)
    assert filled == [
        "model.num_classes=3",
        "model.model.in_features=20",
        "model.loss.num_classes=3",
        "model.peers[0].in_chans=1",
    ]
    assert config["init_args"]["model"]["init_args"]["num_classes"] == 7  # given: kept (the task checks it)
    with pytest.raises(ValueError, match="model.model.in_features is null, to be filled from the data, but"):
        fill_from_data(
            {"class_path": "M", "init_args": {"model": {"class_path": "MLP", "init_args": {"in_features": None}}}}, {}
        )
    with pytest.raises(ValueError, match=r"MLP.in_features is null: the aipflow command fills it from the data"):
        require_size(None, "MLP.in_features")
    assert math.prod(Data.input_shape) == sizes["in_features"]


# an image folder and a digits table: tests/test_golden_recipes.py fits every own-data recipe on each; here a saved
# DatasetDict with its own splits (the data path is the recipes' common HFDataModule: one recipe shows it)
@pytest.mark.parametrize("recipe", ["coteaching"])
@pytest.mark.parametrize("kind, source", [("images", "saved")])
def test_own_data_recipes_train_with_only_the_source_given(sources, kind, source, recipe, tmp_path, monkeypatch):
    from aipflow.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", f"noisy_{kind}_{recipe}", f"--data.source={sources / source}"]
    argv += ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    argv += ["--data.images.size=32"] if kind == "images" else []
    assert main(argv) == 0


@pytest.mark.parametrize("recipe", ["noisy_nce_rce", "noisy_forward", "quickstart"])
def test_a_digits_recipe_trains_on_a_table_with_only_data_overrides(recipe, sources, tmp_path, monkeypatch, caplog):
    # ELR-style per-sample state, the transition matrix estimated out of fold (quickstart), IVON's posterior
    import logging

    from aipflow.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", recipe, "--data=HFDataModule", f"--data.source={sources / 'digits.csv'}"]
    argv += ["--trainer.fast_dev_run=2", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert "sizes from the data: " in caplog.text and "model.num_classes=10" in caplog.text


def test_the_earlier_flat_image_options_mean_the_same_settings(sources):
    # Python keywords, a YAML config (what earlier runs saved) and command-line keys: each becomes data.images
    from aipflow.config import _legacy_data_key, legacy_data_options

    flat = {
        "image_column": "file",
        "image_model": "resnet18",
        "image_size": 32,
        "image_mode": "L",
        "augment": False,
        "crop_scale": [0.5, 1.0],
        "hflip": 0.0,
    }
    grouped = ImageOptions(
        column="file", model="resnet18", size=32, mode="L", augment=False, crop_scale=(0.5, 1.0), hflip=0.0
    )
    assert HFDataModule(str(sources / "paths.csv"), **flat).images == grouped
    saved = {
        "data": {"class_path": "aipflow.data.HFDataModule", "init_args": {"source": "s", "noise_rate": 0.2, **flat}}
    }
    init_args = legacy_data_options(saved)["data"]["init_args"]
    assert init_args == {
        "source": "s",
        "label_noise": {"rate": 0.2},
        "images": {k: v for k, v in grouped.as_dict().items() if k != "unreadable"},  # the flat options only
    }
    assert _legacy_data_key("--data.init_args.image_size") == "--data.init_args.images.size"
    assert _legacy_data_key("--data.hflip") == "--data.images.hflip"
    # a features run's saved config lists the image options at their defaults: they never applied, and still do not
    features = {"data": {"init_args": {"source": "s", "image_column": None, "augment": True, "hflip": 0.5}}}
    assert legacy_data_options(features)["data"]["init_args"] == {"source": "s"}
    assert HFDataModule(str(sources / "digits.csv"), image_column=None, augment=True).images is None
    with pytest.raises(TypeError, match="unexpected keyword argument 'image_colum'"):
        HFDataModule(str(sources / "digits.csv"), image_colum="image")
