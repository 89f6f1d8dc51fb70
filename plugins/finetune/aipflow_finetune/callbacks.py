"""What trains, said at the start of fit; and a clear stop when something meant to train gets no gradient (a LoRA
target that matched a layer the forward pass never uses, a head cut off from the loss)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["AdapterCheckpoint", "TrainableParameterGuard", "trained_keys"]


class TrainableParameterGuard(Callback):
    """At the start of fit, prints how many parameters train (count, share, and the names grouped by module);
    after the first backward pass, raises one line naming every trainable parameter without a gradient."""

    def __init__(self, show: int = 8) -> None:
        self.show = show
        self.checked = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        strategy = trainer.strategy
        partly_frozen = len({p.requires_grad for p in pl_module.parameters()}) > 1
        if isinstance(strategy, FSDPStrategy) and partly_frozen and not strategy.kwargs.get("use_orig_params"):
            # FSDP's flat parameters hold one requires_grad each: a LoRA or linear-probe model cannot be flattened
            raise ValueError(
                "trainer.strategy: FSDP of a partly frozen model (LoRA, a linear probe) needs "
                "FSDPStrategy(use_orig_params=True)"
            )

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
        # under FSDP a parameter held by another rank is empty here (and has no gradient here): not missing
        missing = [n for n, p in pl_module.named_parameters() if p.requires_grad and p.numel() and p.grad is None]
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


class AdapterCheckpoint(Callback):
    """Checkpoints that hold what trains: the trainable parameters (LoRA adapters, the head, or everything in a
    full fine-tune) and the buffers of modules that train, with the optimizer state and every RNG as usual; the
    frozen pretrained weights are left out (they come from ``model.backbone``), so a LoRA checkpoint of MiniLM is
    under a megabyte instead of 90 MB. A fingerprint of the frozen weights is saved and checked on load: restoring
    onto another base model is refused in one line instead of training a mix."""

    def __init__(self) -> None:
        self._fingerprint: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.strict_loading = False  # the frozen weights are absent from the checkpoint by design

    def _frozen_fingerprint(self, pl_module: L.LightningModule) -> str:
        if self._fingerprint is None:
            import hashlib

            digest = hashlib.sha256()
            for name, param in pl_module.named_parameters():
                if not param.requires_grad:
                    digest.update(name.encode())
                    digest.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        keep = trained_keys(pl_module)
        state = checkpoint["state_dict"]
        dropped = [k for k in state if k not in keep]
        for key in dropped:
            del state[key]
        checkpoint["aipflow_adapter"] = {
            "frozen_sha256": self._frozen_fingerprint(pl_module),
            "kept": len(state),
            "dropped": len(dropped),
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get("aipflow_adapter")
        if saved is None:  # a full checkpoint: everything is in it
            return
        if saved["frozen_sha256"] != self._frozen_fingerprint(pl_module):
            raise ValueError(
                "--ckpt_path holds adapters trained on other frozen weights than this model's (model.backbone, "
                "model.method or model.lora differ from the run that saved it)"
            )
        missing = sorted(trained_keys(pl_module) - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(f"--ckpt_path lacks trained weights this model has: {missing[:5]}")


def trained_keys(module: torch.nn.Module) -> set[str]:
    """State-dict keys of the trainable parameters and of the buffers of modules that have one."""
    keys = {name for name, param in module.named_parameters() if param.requires_grad}
    for module_name, sub in module.named_modules():
        if any(p.requires_grad for p in sub.parameters(recurse=False)):
            prefix = f"{module_name}." if module_name else ""
            keys |= {prefix + name for name, _ in sub.named_buffers(recurse=False)}
    return keys
