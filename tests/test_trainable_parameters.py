"""The task's optimizer sees only what trains: frozen parameters get no state, no weight decay and no posterior
noise, and a network's parameter groups keep their learning-rate scales (layer-wise decay), with every optimizer."""

import functools

import pytest
import torch
from torch import nn

from aipflow.optim import IVON, SAM
from aipflow.tasks import ClassificationTask


class Frozen(nn.Module):
    """Two layers; the first frozen (a pretrained backbone)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = nn.Linear(4, 8), nn.Linear(8, 3)
        self.backbone.requires_grad_(False)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)))


class Grouped(Frozen):
    """With parameter groups: the head's weight at half the learning rate (as layer-wise decay would)."""

    def parameter_groups(self):
        return [
            {"params": list(self.backbone.parameters())},
            {"params": [self.head.weight], "lr_scale": 0.5},
            {"params": [self.head.bias]},
        ]


@pytest.mark.parametrize(
    "factory",
    [
        functools.partial(torch.optim.AdamW, lr=0.1, weight_decay=0.5),
        functools.partial(IVON, lr=0.1, ess=100, weight_decay=0.5),
        functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.1, weight_decay=0.5)),
    ],
    ids=["adamw", "ivon", "sam"],
)
def test_frozen_parameters_are_not_in_the_optimizer(factory):
    torch.manual_seed(0)
    net = Frozen()
    task = ClassificationTask(net, optimizer=factory, num_classes=3, reliability_diagram=False)
    optimizer = task.configure_optimizers()
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(net.head.weight), id(net.head.bias)}
    before = net.backbone.weight.clone()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert torch.equal(net.backbone.weight, before)  # no decay, no noise left behind


def test_parameter_groups_scale_the_learning_rate():
    net = Grouped()
    task = ClassificationTask(net, optimizer=functools.partial(torch.optim.SGD, lr=0.2), num_classes=3)
    optimizer = task.configure_optimizers()
    lrs = {id(g["params"][0]): g["lr"] for g in optimizer.param_groups}
    assert lrs == {id(net.head.weight): pytest.approx(0.1), id(net.head.bias): pytest.approx(0.2)}  # frozen: absent


def test_nothing_to_train_is_one_line():
    net = nn.Linear(4, 3).requires_grad_(False)
    with pytest.raises(ValueError, match="model: no parameter requires a gradient"):
        ClassificationTask(net, num_classes=3).configure_optimizers()
