"""LoRA (Hu et al., ICLR 2022) through ``peft``: low-rank updates ``W + (alpha / r) B A`` on the named linear
layers, the pretrained weights frozen. Settings are data (:class:`LoraSettings`); a target that matches no layer is
one line listing the layers there are."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

__all__ = ["LoraSettings", "apply_lora", "reset_adapters"]


@dataclass
class LoraSettings:
    """``r``: the rank; ``alpha``: the scale numerator (the update is ``alpha / r`` times ``B A``); ``dropout`` on
    the adapter's input; ``target_modules``: layer names (suffixes, as peft matches them: ``query`` matches
    ``encoder.layer.0.attention.self.query``) or one regular expression matched against the full names."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | str = field(default_factory=lambda: ["query", "value"])


def apply_lora(backbone: nn.Module, settings: LoraSettings, field_name: str = "model.lora") -> nn.Module:
    """``backbone`` with LoRA adapters on its target layers (a ``peft`` model); everything else frozen."""
    from peft import LoraConfig, get_peft_model

    if settings.r < 1:
        raise ValueError(f"{field_name}.r must be >= 1, got {settings.r}")
    if not 0.0 <= settings.dropout < 1.0:
        raise ValueError(f"{field_name}.dropout must lie in [0, 1), got {settings.dropout}")
    targets = settings.target_modules
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
    )
    try:
        return get_peft_model(backbone, config)
    except ValueError as err:
        if "not found in the base model" not in str(err) and "Target modules" not in str(err):
            raise
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"{field_name}.target_modules={targets!r} matches no layer of {type(backbone).__name__}; "
            f"its linear layers are named {linear}"
        ) from None


def reset_adapters(module: nn.Module) -> None:
    """Re-draw every LoRA adapter in ``module`` as peft initialises a new one (A Kaiming-uniform, B zero: the update
    starts at 0), from the global torch RNG; the frozen pretrained weights are left as they are."""
    from peft.tuners.lora import LoraLayer

    for layer in module.modules():
        if isinstance(layer, LoraLayer):
            for adapter in layer.lora_A:
                layer.reset_lora_parameters(adapter, True)
