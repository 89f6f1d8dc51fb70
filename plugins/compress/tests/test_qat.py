"""Quantization-aware training (torchao): the converted weights follow the per-group symmetric rule written out in
float64, the converted network computes exactly what the fake-quantized one did, gradients reach the weights
through the rounding (straight-through), QAT inside fit keeps the parameter objects and resumes; bad settings are
one line."""

import functools

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from aipflow_compress.qat import QuantizationAwareTraining, convert_qat, prepare_qat  # noqa: E402

from aipflow.data import DigitsDataModule  # noqa: E402
from aipflow.models import MLP  # noqa: E402
from aipflow.tasks import ClassificationTask  # noqa: E402
from aipflow.testing import quiet_trainer  # noqa: E402


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.mark.parametrize("bits", [8, 4])
def test_the_converted_network_is_the_fake_quantized_one_with_integer_weights(bits):
    model = net()
    weight = model[0].weight.detach().double().clone()
    x = torch.randn(8, 64)
    reference = model(x)
    assert prepare_qat(model, bits, 32) == ["0", "2"]
    fake = model(x)
    assert fake.shape == reference.shape and not torch.equal(fake, reference)
    fake.sum().backward()
    assert model[0].weight.grad.abs().sum() > 0  # straight-through: the rounding does not stop the gradient
    convert_qat(model, bits, 32)
    assert torch.equal(model(x), fake.detach())
    half_range = (2**bits - 1) / 2  # 127.5 for int8, 7.5 for int4
    groups = weight.reshape(32, 2, 32)
    scale = (groups.abs().amax(-1, keepdim=True) / half_range).float().double()
    q_ref = torch.clamp(torch.round(groups / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).reshape(32, 64)
    stored = model[0].weight
    assert (stored.qdata.double() - q_ref).abs().max() <= 1 and (stored.qdata.double() == q_ref).float().mean() > 0.99


def test_qat_in_fit_trains_and_resumes(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(epochs, ckpt_path=None, root=tmp_path / "a"):
        import lightning as L

        L.seed_everything(0, verbose=False)
        task = ClassificationTask(
            MLP(in_features=64, num_classes=10, hidden=[64]),
            optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
            num_classes=10,
            reliability_diagram=False,
        )
        callbacks = [QuantizationAwareTraining(group_size=32), ModelCheckpoint(root, "{epoch}", save_top_k=-1)]
        trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0, enable_checkpointing=True, callbacks=callbacks)
        trainer.fit(task, DigitsDataModule(batch_size=64), ckpt_path=ckpt_path)
        return trainer, task

    trainer, straight = fit(3)
    assert type(straight.model.net[1]).__name__ == "FakeQuantizedLinear"
    assert trainer.test(straight, datamodule=DigitsDataModule(batch_size=64), verbose=False)[0]["test/acc"] > 0.8
    _, resumed = fit(3, tmp_path / "a" / "epoch=0.ckpt", tmp_path / "b")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match=r"qat.weight_bits must be one of \(4, 8\), got 2"):
        QuantizationAwareTraining(weight_bits=2)
    with pytest.raises(ValueError, match="qat.group_size=24 does not divide layer 0's 64 input features"):
        prepare_qat(net(), 8, 24)
