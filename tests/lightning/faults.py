"""Faults injected into real runs by the tests (a callback the installed command loads by class path)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillRank(Callback):
    """Kills process ``rank`` with SIGKILL (as the out-of-memory killer or a lost node would) when it is about to
    train global step ``step``: no exception, no clean-up, no chance to tell the other ranks."""

    def __init__(self, rank: int = 1, step: int = 3) -> None:
        self.rank = rank
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
