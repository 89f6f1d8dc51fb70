import pytest
import torch

from aipflow.data import DigitsDataModule, LabelNoise


def test_split_is_fixed_standardised_and_noise_only_on_train():
    dm = DigitsDataModule(label_noise=LabelNoise("symmetric", 0.4, convention="exact"))
    dm.setup()
    n = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert n == 1797 and len(dm.test_set) == 360
    again = DigitsDataModule()
    again.setup()
    assert torch.equal(dm.test_set.x, again.test_set.x)  # same split regardless of noise
    assert torch.equal(dm.train_set.clean_y, again.train_set.y)
    x = dm.train_set.x
    assert x.mean().abs() < 1e-5 and x.shape[1:] == (1, 8, 8)
    assert dm.noise_report.realised_rate == pytest.approx(0.4, abs=1e-3)
    wrong = (dm.train_set.y != dm.train_set.clean_y).float().mean().item()
    assert wrong == pytest.approx(0.4, abs=1e-3)
    assert torch.equal(dm.val_set.y, dm.val_set.clean_y)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y", "clean_y", "index"}
    assert torch.equal(dm.train_set.y[batch["index"]], batch["y"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_noise": {"rate": 1.2}}, r"^data.label_noise.rate must lie in \[0, 1\), got 1.2$"),
        ({"label_noise": {"kind": "gaussian"}}, "^data.label_noise.kind must be one of"),
        ({"label_noise": {"convention": "x"}}, "^data.label_noise.convention must be one of"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"val_fraction": 0.0}, "data.val_fraction"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_the_earlier_flat_noise_options_still_mean_the_settings_fields():
    earlier = DigitsDataModule(noise="pair", noise_rate=0.3, noise_seed=5)
    assert earlier.label_noise == LabelNoise("pair", 0.3, seed=5)
    assert "noise_rate" not in earlier.hparams and earlier.hparams["label_noise"]["rate"] == 0.3
    earlier.setup()
    now = DigitsDataModule(label_noise=LabelNoise("pair", 0.3, seed=5))
    now.setup()
    assert torch.equal(earlier.train_set.y, now.train_set.y)
    with pytest.raises(
        TypeError, match=r"DigitsDataModule.__init__\(\) got an unexpected keyword argument 'noise_ratio'"
    ):
        DigitsDataModule(noise_ratio=0.3)
