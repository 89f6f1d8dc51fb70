"""What trains, said at the start of fit; and a clear stop when something meant to train gets no gradient (a LoRA
target that matched a layer the forward pass never uses, a head cut off from the loss)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["TrainableParameterGuard"]


class TrainableParameterGuard(Callback):
    """At the start of fit, prints how many parameters train (count, share, and the names grouped by module);
    after the first backward pass, raises one line naming every trainable parameter without a gradient."""

    def __init__(self, show: int = 8) -> None:
        self.show = show
        self.checked = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = list(pl_module.named_parameters())
        trainable = [(n, p) for n, p in named if p.requires_grad]
        total = sum(p.numel() for _, p in named)
        count = sum(p.numel() for _, p in trainable)
        groups = sorted({_group(n) for n, _ in trainable})
        shown = ", ".join(groups[: self.show]) + (f", ... ({len(groups)} groups)" if len(groups) > self.show else "")
        rank_zero_info(
            f"[aipflow] trains {count:,} of {total:,} parameters ({100 * count / max(total, 1):.2f} %), "
            f"{len(trainable)} tensors: {shown}"
        )

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checked:
            return
        self.checked = True
        missing = [n for n, p in pl_module.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            shown = ", ".join(missing[: self.show]) + (
                f", ... ({len(missing)} in all)" if len(missing) > self.show else ""
            )
            raise ValueError(
                f"trainable parameters got no gradient in the first step (never used by the loss?): {shown}"
            )


def _group(name: str) -> str:
    """``model.encoder.base_model.model.encoder.layer.3.attention.self.query.lora_A.default.weight`` ->
    ``...layer.*.attention.self.query.lora_A``: layer numbers folded, the adapter name and tensor kind dropped."""
    import re

    parts = [p for p in name.split(".") if p not in ("weight", "bias", "default")]
    return re.sub(r"\.\d+\.", ".*.", ".".join(parts))
