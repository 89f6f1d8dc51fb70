"""Structured channel pruning (torch-pruning): the channels kept are those numpy ranks highest by filter L1 norm,
and the pruned network computes what the original computes with the removed channels cut off at the next layer;
ResNet-18 at 50 % of its channels has at most half the MACs and keeps its classes; a saved pruned model loads
with ``weights_only=True`` into a fresh one and gives the same outputs; bad ratios are one line."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning")

from aipflow_compress.structured import load_pruned, prune_channels, save_pruned  # noqa: E402


def chain() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 4),
    )
    with torch.no_grad():  # batch-norm statistics that are not the identity
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def test_the_kept_channels_are_the_largest_by_l1_and_the_rest_is_cut_at_the_next_layer():
    original, pruned = chain(), chain()
    x = torch.randn(5, 3, 8, 8)
    report = prune_channels(pruned, x[:1], ratio=0.5, importance="l1")
    norms = original[0].weight.detach().abs().sum((1, 2, 3)).numpy()
    kept = np.sort(np.argsort(-norms, kind="stable")[:4])  # numpy: the 4 filters of largest L1 norm
    assert pruned[0].out_channels == 4 and pruned[1].num_features == 4 and pruned[3].in_channels == 4
    assert torch.equal(pruned[0].weight, original[0].weight[kept])
    with torch.no_grad():  # the original with the removed channels' weights in the next layer set to zero
        removed = [c for c in range(8) if c not in kept]
        original[3].weight[:, removed] = 0
    # conv2's own channels were pruned too (6 -> 3): compare the outputs through its kept channels
    kept2 = [
        c for c in range(6) if any(torch.equal(pruned[3].weight[i], original[3].weight[c, kept]) for i in range(3))
    ]
    assert len(kept2) == 3
    reference = original[:4](x)[:, kept2]
    assert torch.allclose(pruned[:4](x), reference, atol=1e-5)
    assert report["params_after"] < report["params_before"]


def test_half_of_resnet18s_channels_halve_its_macs_and_keep_its_classes(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    report = prune_channels(model, x, ratio=0.5)
    assert report["macs_after"] <= 0.5 * report["macs_before"]
    assert model.layer1[0].conv1.out_channels == 32 and model.fc.out_features == 10
    out = model(x)
    path = save_pruned(model, tmp_path / "pruned.pt")
    fresh = load_pruned(timm.create_model("resnet18", pretrained=False, num_classes=10).eval(), path)
    assert torch.equal(fresh(x), out)


def test_bad_ratios_and_importances_are_one_line():  # attention layouts: test_heads.py
    with pytest.raises(ValueError, match=r"structured.ratio must lie in \[0, 1\), got 1.0"):
        prune_channels(chain(), torch.randn(1, 3, 8, 8), ratio=1.0)
    with pytest.raises(ValueError, match="structured.importance must be one of"):
        prune_channels(chain(), torch.randn(1, 3, 8, 8), importance="taylor")
