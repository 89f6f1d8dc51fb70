import pytest
import torch

from aipflow.models import MLP, SmallCNN, TimmModel


def test_small_models_shapes():
    x = torch.randn(5, 1, 8, 8)
    assert SmallCNN()(x).shape == (5, 10)
    assert SmallCNN()(x.flatten(1)).shape == (5, 10)  # flattened digits are reshaped
    assert MLP(hidden=(16,), batch_norm=True, dropout=0.1)(x).shape == (5, 10)


def test_timm_model_by_name_resizes_small_inputs():
    model = TimmModel("resnet18", num_classes=10, in_chans=1, input_size=32).eval()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'"):
        TimmModel("resnet1800")
