"""Networks for the embedded tasks, plus any timm model by name; and how a network is re-initialised for a fresh
copy (a cross-fitting fold, a co-teaching peer) without throwing its pretraining away."""

from __future__ import annotations

import torch
from torch import nn

from aipflow.sizes import require_size

__all__ = [
    "MLP",
    "SmallCNN",
    "TimmModel",
    "check_timm_name",
    "create_timm_model",
    "reinitialize",
    "trainable_parameters",
    "with_extra_class",
]


def check_timm_name(name: str, field: str) -> None:
    """One line naming the config ``field`` (and timm's closest names) when timm has no model ``name``."""
    import timm

    if timm.list_models(name) or name in timm.list_models():
        return
    close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
    raise ValueError(f"{field}: unknown timm model {name!r}; similar: {close}")


def create_timm_model(name: str, field: str = "model.name", **options) -> nn.Module:
    """``timm.create_model(name, **options)`` after :func:`check_timm_name`: the one place aipflow and its plugins
    build a timm network."""
    import timm

    check_timm_name(name, field)
    return timm.create_model(name, **options)


def trainable_parameters(network: nn.Module) -> list:
    """What an optimizer of ``network`` updates: its ``parameter_groups()`` when it declares them (e.g. layer-wise
    learning-rate decay: groups with an ``lr_scale``), else every parameter that requires a gradient (a frozen
    backbone gets no optimizer state, no weight decay and, with bSAM / IVON, no noise)."""
    groups = getattr(network, "parameter_groups", None)
    if callable(groups):
        return [g for g in groups() if any(p.requires_grad for p in g["params"])]
    return [p for p in network.parameters() if p.requires_grad]


def reinitialize(network: nn.Module) -> None:
    """Re-draw ``network``'s initialisation in place, as a new run would start it, from the global torch RNG (seed
    it first): the fresh copy a cross-fitting fold or a co-teaching peer trains.

    A module that declares ``reinitialize_trainable()`` is asked to and its submodules are left to it: a pretrained
    network re-draws only what a run initialises itself (its head, its adapters) and keeps the pretrained weights.
    Every other module with ``reset_parameters`` is reset, in module order (``network.modules()``)."""
    seen: set[int] = set()
    stack = [network]
    while stack:  # pre-order, children in order: the order of network.modules()
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        declared = getattr(module, "reinitialize_trainable", None)
        if callable(declared):
            declared()
            continue
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        stack.extend(reversed(list(module.children())))


def with_extra_class(network: nn.Module, num_classes: int) -> nn.Module:
    """``network`` with one more output class (in place, returned): its classifier, the last ``nn.Linear`` with
    ``num_classes`` outputs in module order, replaced by one with ``num_classes + 1``, the first ``num_classes``
    rows its own weights. What the area under the margin's threshold samples are labelled with (a class no row
    has). One line when the network has no such layer."""
    heads = [(name, m) for name, m in network.named_modules() if isinstance(m, nn.Linear)]
    heads = [(name, m) for name, m in heads if m.out_features == num_classes]
    if not heads:
        raise ValueError(
            f"{type(network).__name__}: no nn.Linear layer with {num_classes} outputs (the classifier) to add the "
            "area under the margin's threshold class to"
        )
    name, head = heads[-1]
    wider = nn.Linear(head.in_features, num_classes + 1, bias=head.bias is not None)
    wider = wider.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        wider.weight[:num_classes] = head.weight
        if head.bias is not None:
            wider.bias[:num_classes] = head.bias
    if name == "":  # the network is the classifier
        return wider
    parent, _, attribute = name.rpartition(".")
    setattr(network.get_submodule(parent), attribute, wider)
    return network


class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs."""

    def __init__(
        self,
        in_features: int | None = 64,
        num_classes: int | None = 10,
        hidden: tuple[int, ...] | list[int] = (128, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        width = require_size(in_features, "MLP.in_features")
        num_classes = require_size(num_classes, "MLP.num_classes")
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """A small CNN for small images (digits' 8x8, up to about 64x64): three conv blocks with BatchNorm, pooled to
    2x2, then a linear head."""

    def __init__(
        self, num_classes: int | None = 10, in_channels: int | None = 1, width: int = 32, dropout: float = 0.1
    ) -> None:
        super().__init__()
        num_classes = require_size(num_classes, "SmallCNN.num_classes")
        in_channels = require_size(in_channels, "SmallCNN.in_channels")

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(in_channels, width),
            block(width, width),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            block(width, 2 * width),
            nn.MaxPool2d(2),  # 4x4 -> 2x2: keeps where strokes are, which global pooling would lose
            nn.AdaptiveAvgPool2d(2),  # larger images to 2x2 as well (for 8x8 inputs, the identity)
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # flattened digits
            side = int(round((x.shape[1]) ** 0.5))
            x = x.view(x.shape[0], 1, side, side)
        return self.head(self.features(x))


class TimmModel(nn.Module):
    """Any timm model by name (``pretrained`` loads weights only from a local cache or ``checkpoint_path``).

    ``input_size`` resizes inputs first (bilinear), e.g. to run a ResNet on 8x8 digits.
    """

    def __init__(
        self,
        name: str,
        num_classes: int | None = 10,
        in_chans: int | None = 1,
        pretrained: bool = False,
        checkpoint_path: str = "",
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = require_size(num_classes, "TimmModel.num_classes")
        in_chans = require_size(in_chans, "TimmModel.in_chans")
        self.model = create_timm_model(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, checkpoint_path=checkpoint_path
        )
        self.input_size = input_size
        self.pretrained = bool(pretrained or checkpoint_path)

    def reinitialize_trainable(self) -> None:
        """For a fresh copy (:func:`reinitialize`): with pretrained weights only the classifier is re-drawn (the
        backbone is what every run starts from); from scratch, everything."""
        reinitialize(self.model.get_classifier() if self.pretrained else self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear")
        return self.model(x)
