"""Lightning strategies made to run on CPU processes in tests: Lightning's FSDPStrategy refuses CPU as shipped
(issue 13 measured it); wrapped with device_id=cpu and launched by fork it runs the real sharding code."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher


class _ForkLauncher(_MultiProcessingLauncher):
    """Fork inside pytest; the parent's (unsharded) module is not refilled from rank 0's sharded state dict."""

    def _collect_rank_zero_results(self, trainer, results):
        out = super()._collect_rank_zero_results(trainer, results)
        if out is not None and out.weights_path is not None:
            os.remove(out.weights_path)
            out = out._replace(weights_path=None)
        return out


class CPUFSDPStrategy(FSDPStrategy):
    def _configure_launcher(self) -> None:
        self._launcher = _ForkLauncher(self, start_method="fork")

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(
            module=model, sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs
        )
