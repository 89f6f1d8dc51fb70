"""The callbacks aipflow puts on a ``Trainer``, decided here and only here.

Three callers ask: Lightning's ``callbacks_factory`` entry point (every ``Trainer`` in an environment where aipflow
is installed: only what makes multi-pass optimizers correct, nothing that could stop someone else's run), every
aipflow task's ``configure_callbacks`` (what a run needs and its trainer lacks, when the task is used from Python),
and the ``aipflow`` command (the same, plus a checkpoint callback whose ``last.ckpt`` is the last epoch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from lightning.pytorch.callbacks import Callback

__all__ = ["command_callbacks", "default_callbacks"]


def _kinds(scope: str) -> list[tuple[type[Callback], type[Callback]]]:
    """(the class to add, the class whose presence makes it unnecessary), in the order they are added."""
    from aipflow.lightning.multi_pass import AutomaticSharpnessAwareTraining, SharpnessAwareTraining

    every_trainer = [(AutomaticSharpnessAwareTraining, SharpnessAwareTraining)]
    if scope == "trainer":
        return every_trainer
    from aipflow.lightning.checkpoint import RNGStateCheckpoint
    from aipflow.lightning.guards import LostProcessExplainer, NonFiniteGuard

    return every_trainer + [(kind, kind) for kind in (LostProcessExplainer, RNGStateCheckpoint, NonFiniteGuard)]


def default_callbacks(present: Iterable[Callback] = (), scope: Literal["run", "trainer"] = "run") -> list[Callback]:
    """The default callbacks missing from ``present``.

    ``scope="trainer"``: what any ``Trainer`` gets (the automatic multi-pass integration, which steps aside for a
    configured :class:`~aipflow.lightning.SharpnessAwareTraining`). ``scope="run"``: what an aipflow run needs
    besides: one clear line when another process of the run died, every RNG in its checkpoints, a stop at the first
    non-finite loss or monitored metric."""
    if scope not in ("run", "trainer"):
        raise ValueError(f"scope must be 'run' or 'trainer', got {scope!r}")
    present = list(present)
    return [kind() for kind, satisfied_by in _kinds(scope) if not any(isinstance(cb, satisfied_by) for cb in present)]


def command_callbacks(configured: Iterable[Callback], enable_checkpointing: bool | None = True) -> list[Callback]:
    """The callbacks of an ``aipflow`` command's ``Trainer``: the run defaults it lacks (in front, in
    :func:`default_callbacks`' order), the configured ones, and, unless checkpointing is off, aipflow's
    :class:`~aipflow.lightning.ModelCheckpoint` where none is configured (Lightning would add its own, whose
    ``last.ckpt`` holds the last *best* epoch). The first checkpoint callback's unset ``save_last`` becomes true;
    an explicit false is respected."""
    from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

    from aipflow.lightning.checkpoint import ModelCheckpoint

    configured = list(configured)
    callbacks = [cb for cb in default_callbacks(configured) if not _is_trainer_wide(cb)] + configured
    if enable_checkpointing is False:
        return callbacks
    checkpoints = [cb for cb in callbacks if isinstance(cb, LightningModelCheckpoint)]
    if not checkpoints:
        checkpoints = [ModelCheckpoint()]
        callbacks.append(checkpoints[0])
    if isinstance(checkpoints[0], ModelCheckpoint) and checkpoints[0].save_last is None:
        checkpoints[0].save_last = True
    return callbacks


def _is_trainer_wide(callback: Callback) -> bool:
    # the entry point adds it to the Trainer (once); added here too, the trainer would hold two
    from aipflow.lightning.multi_pass import AutomaticSharpnessAwareTraining

    return isinstance(callback, AutomaticSharpnessAwareTraining)
