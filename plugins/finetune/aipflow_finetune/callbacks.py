"""What trains, said at the start of fit; and a clear stop when something meant to train gets no gradient (a LoRA
target that matched a layer the forward pass never uses, a head cut off from the loss)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["AdapterCheckpoint", "GradualUnfreeze", "TrainableParameterGuard", "trained_keys"]

# set on a parameter that a schedule holds frozen for now: it is still one that trains (checkpoints keep it)
_SCHEDULED = "_aipflow_scheduled_to_train"


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
                if not _trains(param):
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


def _trains(param: torch.nn.Parameter) -> bool:
    return param.requires_grad or getattr(param, _SCHEDULED, False)


def trained_keys(module: torch.nn.Module) -> set[str]:
    """State-dict keys of the trainable parameters (those a freezing schedule holds for now included) and of the
    buffers of modules that have one."""
    keys = {name for name, param in module.named_parameters() if _trains(param)}
    for module_name, sub in module.named_modules():
        if any(_trains(p) for p in sub.parameters(recurse=False)):
            prefix = f"{module_name}." if module_name else ""
            keys |= {prefix + name for name, _ in sub.named_buffers(recurse=False)}
    return keys


class GradualUnfreeze(Callback):
    """Freeze and gradual-unfreeze schedules. Gradual unfreezing (Howard & Ruder, "Universal Language Model
    Fine-tuning for Text Classification", ACL 2018, section 3.2): the first epoch trains only the top group (the
    head); every ``epochs_per_group`` epochs the next group down is released (the last encoder layer, then the one
    below, ... the embeddings), until everything meant to train does. With ``groups_per_step=null`` the rest is
    released at once: a linear probe for ``epochs_per_group`` epochs, then the whole fine-tune (LP-FT, Kumar et
    al., ICLR 2022).

    The groups are the network's ``unfreeze_order()`` (``TextClassifier``, ``VisionClassifier``); a group is its
    trainable part (LoRA's adapters, or whole layers in a full fine-tune). Held groups get no gradient (their
    backward pass is skipped), no optimizer step, no weight decay, and no posterior noise from IVON / bSAM; they
    still count as trained for checkpoints. The state is a function of the epoch, so a resumed run is frozen as
    the uninterrupted one was.

    Args:
        epochs_per_group: epochs between releases (ULMFiT: 1).
        initial_groups: groups that train from the first epoch (1: the head).
        groups_per_step: groups released each time (null: all the rest at once).
    """

    def __init__(self, epochs_per_group: int = 1, initial_groups: int = 1, groups_per_step: int | None = 1) -> None:
        for field, value in (("epochs_per_group", epochs_per_group), ("initial_groups", initial_groups)):
            if int(value) != value or value < 1:
                raise ValueError(f"GradualUnfreeze.{field} must be an integer >= 1, got {value!r}")
        if groups_per_step is not None and (int(groups_per_step) != groups_per_step or groups_per_step < 1):
            raise ValueError(
                f"GradualUnfreeze.groups_per_step must be an integer >= 1 or null, got {groups_per_step!r}"
            )
        self.epochs_per_group = int(epochs_per_group)
        self.initial_groups = int(initial_groups)
        self.groups_per_step = groups_per_step
        self._groups: list[list[torch.nn.Parameter]] = []
        self._released = -1

    def released_at(self, epoch: int) -> int:
        """How many groups train in ``epoch`` (0-based)."""
        steps = epoch // self.epochs_per_group
        if self.groups_per_step is None:
            released = self.initial_groups if steps == 0 else len(self._groups)
        else:
            released = self.initial_groups + steps * self.groups_per_step
        return min(released, len(self._groups))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

        strategy = trainer.strategy
        if isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy)):
            raise ValueError(
                f"GradualUnfreeze under {type(strategy).__name__}: sharded parameters cannot change requires_grad "
                "during training; use DDP (strategy=ddp_find_unused_parameters_true) or one device"
            )
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            raise ValueError(
                "GradualUnfreeze under DDP: held layers send no gradient, which DDP must be told of; use "
                "trainer.strategy=ddp_find_unused_parameters_true"
            )
        network = getattr(pl_module, "model", pl_module)
        order = getattr(network, "unfreeze_order", None)
        if not callable(order):
            raise ValueError(
                f"GradualUnfreeze: the network ({type(network).__name__}) has no unfreeze_order(); it works with "
                "TextClassifier, VisionClassifier or a network that lists its parameter groups top first"
            )
        self._groups = [list(group) for group in order() if group]
        for group in self._groups:
            for param in group:
                setattr(param, _SCHEDULED, True)
        self._released = -1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        released = self.released_at(trainer.current_epoch)
        for index, group in enumerate(self._groups):
            for param in group:
                param.requires_grad_(index < released)
        if released != self._released:
            count = sum(p.numel() for group in self._groups[:released] for p in group)
            rank_zero_info(
                f"[aipflow] epoch {trainer.current_epoch}: {released} of {len(self._groups)} parameter groups train "
                f"({count:,} parameters)"
            )
            self._released = released

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.max_epochs - 1 if trainer.max_epochs and trainer.max_epochs > 0 else None
        if last is not None and self.released_at(last) < len(self._groups):
            rank_zero_info(
                f"[aipflow] GradualUnfreeze: by the last epoch ({last}) {self.released_at(last)} of "
                f"{len(self._groups)} groups will have trained; the rest keep their initial weights"
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # after fit everything meant to train is trainable again: exports, checkpoints and a later fit see it so
        for group in self._groups:
            for param in group:
                param.requires_grad_(True)
