"""Quantization-aware training through torchao (``QATConfig``; Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018): during fit the Linear layers run with fake
quantization (weights and activations rounded to the integer grid in the forward pass, gradients passed straight
through), so the network learns weights that survive the rounding; :func:`convert_qat` is the explicit export
step that replaces them by real integer weights, computing exactly what the fake-quantized network computed.

The scheme is torchao's int8 dynamic activations (asymmetric, per token) with ``weight_bits``-bit weights
(8 or 4; symmetric per group of ``group_size`` input features, ``s = max |group| / ((2^b - 1) / 2)``). torchao
rejects the int8-int8 base for QAT, so this is the base used. The prepared layers keep their parameter objects
and state-dict keys: an optimizer built afterwards, and checkpoints, see the usual weights.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from aipflow_compress._layers import select_layers

__all__ = ["QuantizationAwareTraining", "convert_qat", "prepare_qat"]

WEIGHT_BITS = (4, 8)


def _config(weight_bits: int, group_size: int):
    if weight_bits not in WEIGHT_BITS:
        raise ValueError(f"qat.weight_bits must be one of {WEIGHT_BITS}, got {weight_bits}")
    if group_size < 1:
        raise ValueError(f"qat.group_size must be >= 1, got {group_size}")
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerGroup

    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8 if weight_bits == 8 else torch.int4, weight_granularity=PerGroup(group_size)
    )


def _apply(model: nn.Module, step: str, weight_bits: int, group_size: int, include, exclude) -> list[str]:
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    base = _config(weight_bits, group_size)
    kinds = (nn.Linear,)
    if step == "convert":
        from torchao.quantization.qat.linear import FakeQuantizedLinear

        kinds = (FakeQuantizedLinear,)
    chosen = select_layers(model, kinds, include, exclude, "qat", exact_type=True)
    for name, layer in chosen.items():
        if layer.in_features % group_size:
            raise ValueError(
                f"qat.group_size={group_size} does not divide layer {name}'s {layer.in_features} input features"
            )
    names = set(chosen)
    quantize_(model, QATConfig(base, step=step), filter_fn=lambda module, name: name in names)
    return sorted(names)


def prepare_qat(
    model: nn.Module, weight_bits: int = 8, group_size: int = 32, include: str | None = None, exclude: str | None = None
) -> list[str]:
    """Fake-quantize ``model``'s Linear layers (in place); returns their names."""
    return _apply(model, "prepare", weight_bits, group_size, include, exclude)


def convert_qat(
    model: nn.Module, weight_bits: int = 8, group_size: int = 32, include: str | None = None, exclude: str | None = None
) -> list[str]:
    """The export step: the fake-quantized layers of a QAT model become integer ones (same settings as prepare)."""
    return _apply(model, "convert", weight_bits, group_size, include, exclude)


class QuantizationAwareTraining(Callback):
    """Prepare the task's network for QAT before the optimizer is built and before a checkpoint is restored (so a
    resumed or tested run has the same layers); train as usual with any core loss and optimizer; export with
    :func:`convert_qat`.

    Args:
        weight_bits: 8 or 4.
        group_size: input features per weight scale (32); must divide every chosen layer's input size.
        include / exclude: regular expressions on layer names (default: every Linear layer).
    """

    def __init__(
        self, weight_bits: int = 8, group_size: int = 32, include: str | None = None, exclude: str | None = None
    ) -> None:
        _config(weight_bits, group_size)  # bad settings fail when the recipe is read, not at fit
        self.weight_bits, self.group_size, self.include, self.exclude = weight_bits, group_size, include, exclude
        self._prepared = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self._prepared:
            prepare_qat(pl_module, self.weight_bits, self.group_size, self.include, self.exclude)
            self._prepared = True
