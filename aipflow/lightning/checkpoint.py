"""Checkpoints a resumed run can rely on: a ``last.ckpt`` that is the last epoch, and every RNG the run draws from.

Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only at a step where a top-k save happened,
so with a monitor it holds the last *best* epoch: a crashed run resumed from it silently redoes epochs, and
``aipflow test --ckpt_path .../last.ckpt`` tests the best weights. This module's :class:`ModelCheckpoint` (the
``ModelCheckpoint`` short name in recipes) writes it at every checkpoint trigger.

Lightning saves no RNG state either: dropout draws from the global torch generator, so a resumed run diverged from
the uninterrupted one (weights 0.3-0.6 apart after one epoch). :class:`RNGStateCheckpoint` saves torch's CPU
generator, every initialised CUDA device's, numpy's and Python's, for every rank, as tensors and plain types (a
checkpoint loads with ``torch.load(weights_only=True)``), and puts them back when training resumes.

Both lean on Lightning internals named here, and only here: ``ModelCheckpoint._save_last_checkpoint``,
``_should_skip_saving_checkpoint``, ``_should_save_on_train_epoch_end`` and ``_monitor_candidates`` (2.4 - 2.6).
"""

from __future__ import annotations

import random
import traceback
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from aipflow.config import ConfigError

__all__ = [
    "CheckpointError",
    "ModelCheckpoint",
    "RNGStateCheckpoint",
    "check_checkpoint_file",
    "collect_rng_state",
    "explain_restore_error",
    "restore_rng_state",
]


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``save_last=True`` means what it says: ``last.ckpt`` is rewritten at
    every checkpoint trigger (each epoch by default), whether or not the monitored value improved. All other
    options and the saved state are Lightning's."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def _save_last_now(self, trainer: L.Trainer) -> None:
        # skipped when a save already happened at this step (Lightning then wrote last.ckpt too), during the sanity
        # check, outside fit and with fast_dev_run
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def collect_rng_state() -> dict[str, Any]:
    """This process's generators as tensors and plain types."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`collect_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            rank_zero_warn(
                f"the checkpoint holds CUDA RNG states for {len(cuda)} devices, this machine has "
                f"{torch.cuda.device_count()}: CUDA generators not restored (the resumed run is not bit-exact)"
            )


class RNGStateCheckpoint(Callback):
    """Saves every rank's RNG state in each checkpoint and restores it when training resumes, so that a resumed
    run equals the uninterrupted one bit for bit (dropout, augmentation, anything drawing from the global
    generators, and the noise generators of bSAM / IVON, which differ per rank).

    When: the state is taken as the checkpoint is written (end of an epoch's validation or training) and put back
    at ``on_fit_start``. Earlier would be too early: Lightning restores callbacks before ``configure_optimizers``,
    which may draw (an unseeded IVON / bSAM draws its noise seed). Later would be too late: the fit loop creates the
    first train iterator before ``on_train_start``, and that draws the DataLoader's base seed, as the uninterrupted
    run does at the start of the next epoch. The sanity check in between runs under Lightning's ``isolate_rng``.
    Strategies that restore after setup (``restore_checkpoint_after_setup``) get the state at ``on_train_start``.
    The optimizers' noise goes back at ``on_train_start``, after Lightning loaded the optimizer states: those are
    rank 0's (DDP saves one copy; FSDP's optimizer state keeps no extra keys), so every rank would otherwise draw
    rank 0's noise."""

    def __init__(self) -> None:
        self._pending: list[Any] | None = None
        self._pending_noise: list[Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # every rank builds the checkpoint (only rank 0 writes it): gather the ranks' states here
        mine = collect_rng_state()
        trainer = getattr(self, "_trainer", None)
        mine["optimizer_noise"] = [_noise_state(opt) for opt in (trainer.optimizers if trainer is not None else [])]
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, mine)
            return {"ranks": ranks}
        return {"ranks": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["ranks"]
        self._pending_noise = [rank.get("optimizer_noise", []) for rank in state_dict["ranks"]]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore(trainer)
        if self._pending_noise is None:
            return
        ranks, self._pending_noise = self._pending_noise, None
        saved = ranks[trainer.global_rank % len(ranks)]
        for optimizer, state in zip(trainer.optimizers, saved, strict=False):
            if state is not None and _noise_state(optimizer) is not None:
                optimizer.noise.load_state_dict(state)

    def _restore(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        ranks, self._pending = self._pending, None
        if len(ranks) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds RNG states for {len(ranks)} processes, this run has {trainer.world_size}: "
                "each rank takes saved state (rank mod saved); the resumed run is not bit-exact"
            )
        restore_rng_state(ranks[trainer.global_rank % len(ranks)])


def _noise_state(optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """A Bayesian optimizer's noise generators (:class:`aipflow.optim._base.NoiseGenerators`), else None."""
    from aipflow.optim._base import NoiseGenerators

    noise = getattr(optimizer, "noise", None)
    return noise.state_dict() if isinstance(noise, NoiseGenerators) else None


# ------------------------------------------------------------------------------------------ checkpoint errors
class CheckpointError(ConfigError):
    """A ``--ckpt_path`` that cannot be used; the message names the file and what is wrong with it."""


#: values of ckpt_path that Lightning resolves itself
_LIGHTNING_CKPT_NAMES = ("best", "last", "hpc")


def check_checkpoint_file(path: str | Path) -> None:
    """Refuse, with one line naming the file, a checkpoint that is missing, empty, truncated, not a PyTorch file,
    or not a Lightning checkpoint; before Lightning opens it (its errors: ``EOFError:``, ``KeyError: 101``). A
    folder (a sharded FSDP / DeepSpeed checkpoint) is left to the strategy."""
    spec = str(path)
    if spec in _LIGHTNING_CKPT_NAMES or spec.startswith("registry"):
        return
    p = Path(spec)
    if not p.exists():
        raise CheckpointError(f"--ckpt_path {spec}: no such file")
    if p.is_dir():
        return
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"--ckpt_path {spec}: the file is empty (0 bytes); was the run killed while saving?")
    with open(p, "rb") as fh:
        head = fh.read(4)
    is_zip = head.startswith(b"PK")
    if is_zip and not zipfile.is_zipfile(p):
        raise CheckpointError(
            f"--ckpt_path {spec}: the file is truncated ({size} bytes, its zip directory is missing); was the run "
            "killed while saving? Use an earlier checkpoint"
        )
    if not is_zip and not head.startswith(b"\x80"):  # neither torch's zip format nor a legacy pickle
        raise CheckpointError(f"--ckpt_path {spec}: not a PyTorch checkpoint (the file starts with {head!r})")
    try:
        checkpoint = torch.load(p, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:  # noqa: BLE001 - any reader error is reported as what it is, with the file named
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"--ckpt_path {spec}: cannot be read as a checkpoint: {first}") from None
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "pytorch-lightning_version" not in checkpoint
    ):
        keys = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"--ckpt_path {spec}: not a Lightning checkpoint (found the keys {keys}); a bare weights file "
            "goes to the model (e.g. TimmModel's checkpoint_path)"
        )


_MODEL_RESTORE = {"restore_model", "load_model_state_dict", "_load_state_dict"}
_OPTIMIZER_RESTORE = {"restore_optimizers", "load_optimizer_state_dict", "restore_optimizers_and_schedulers"}
_ANY_RESTORE = (
    _MODEL_RESTORE
    | _OPTIMIZER_RESTORE
    | {
        "_restore_modules_and_callbacks",
        "restore_training_state",
        "resume_start",
        "restore_callbacks",
        "restore_loops",
        "restore_datamodule",
        "restore_lr_schedulers",
    }
)


def explain_restore_error(exc: BaseException, path: str, model: torch.nn.Module | None) -> CheckpointError | None:
    """One line for an exception raised while Lightning restored ``path``; ``None`` when it came from elsewhere."""
    frames = {frame.name for frame in traceback.extract_tb(exc.__traceback__)}
    if not frames & _ANY_RESTORE or str(path) in _LIGHTNING_CKPT_NAMES:
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001
        checkpoint = {}
    if frames & _MODEL_RESTORE and model is not None and "state_dict" in checkpoint:
        return CheckpointError(f"--ckpt_path {path}: holds another model: {_model_difference(checkpoint, model)}")
    if frames & _OPTIMIZER_RESTORE:
        saved = [_optimizer_kind(state) for state in checkpoint.get("optimizer_states", [])]
        return CheckpointError(
            f"--ckpt_path {path}: holds another optimizer's state (saved: {', '.join(saved) or 'none'}); resume with "
            f"the optimizer it was trained with, or start a new run from its weights ({type(exc).__name__}: {exc})"
        )
    return CheckpointError(f"--ckpt_path {path}: could not be restored: {type(exc).__name__}: {exc}")


def _model_difference(checkpoint: dict, model: torch.nn.Module) -> str:
    saved = checkpoint["state_dict"]
    wanted = model.state_dict()
    unexpected = [k for k in saved if k not in wanted]
    missing = [k for k in wanted if k not in saved]
    mismatched = [k for k in saved if k in wanted and tuple(saved[k].shape) != tuple(wanted[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of this model's {len(wanted)} tensors are not in it (first: {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its {len(saved)} are not in this model (first: {unexpected[0]!r})")
    if mismatched:
        k = mismatched[0]
        parts.append(
            f"{len(mismatched)} differ in shape (first: {k!r} {tuple(saved[k].shape)} in the file, "
            f"{tuple(wanted[k].shape)} here)"
        )
    return "; ".join(parts) or "the tensors match by name and shape but loading failed"


def _optimizer_kind(state: dict) -> str:
    """What a saved optimizer state looks like, from its keys (the class is not recorded by Lightning)."""
    if "base_optimizer" in state:  # SAM's layout in aipflow <= 0.1.0
        return f"SAM/ASAM around {_optimizer_kind(state['base_optimizer'])}"
    groups = state.get("param_groups") or [{}]
    if "sam_steps" in groups[0]:
        return f"SAM/ASAM around {_optimizer_kind({**state, 'param_groups': [{}]})}"
    per_param = next(iter(state.get("state", {}).values()), {})
    keys = set(per_param)
    for marker, name in (
        ("hess", "IVON"),
        ("precision", "bSAM"),
        ("exp_avg", "Adam/AdamW"),
        ("momentum_buffer", "SGD"),
    ):
        if marker in keys:
            return name
    return "SGD without momentum" if not keys else f"an optimizer with state {sorted(keys)}"
