"""Lightning strategies made to run on CPU processes (tests of distributed behaviour without GPUs; exported by
:mod:`aipflow.testing`): Lightning's FSDPStrategy refuses CPU as shipped
(issue 13 measured it); wrapped with device_id=cpu and launched by fork it runs the real sharding code.
ModelParallelStrategy (FSDP2) runs on CPU as shipped, but relaunches the script: forked here inside pytest.
DeepSpeedStrategy refuses CPU too; without its CUDA check, device index and launcher it runs ZeRO 1-3 with gloo."""

from __future__ import annotations

import functools
import os

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

__all__ = ["CPUDeepSpeedStrategy", "CPUFSDPStrategy", "ForkedModelParallelStrategy"]


class _ForkLauncher(_MultiProcessingLauncher):
    """Fork inside pytest; the parent's (unsharded) module is not refilled from rank 0's sharded state dict."""

    def _collect_rank_zero_results(self, trainer, results):
        out = super()._collect_rank_zero_results(trainer, results)
        if out is not None and out.weights_path is not None:
            os.remove(out.weights_path)
            out = out._replace(weights_path=None)
        return out


def _clone_gathered_states(unflatten):
    """torch's full FSDP optimizer state dict gathers every state tensor of a flat parameter into one reused
    buffer and keeps views of it, relying on the offload to CPU (``.cpu()``) to copy them; on CPU that is no copy,
    so every state ends up holding the last one gathered (IVON's saved ``hess`` read back as its ``momentum``).
    GPU runs are unaffected; the test strategy copies each gathered state."""

    @functools.wraps(unflatten)
    def wrapper(fsdp_param_info, output_states, state_name, *args, **kwargs):
        unflatten(fsdp_param_info, output_states, state_name, *args, **kwargs)
        for state in output_states.values():
            if isinstance(state.get(state_name), torch.Tensor):
                state[state_name] = state[state_name].clone()

    wrapper.clones = True
    return wrapper


class CPUFSDPStrategy(FSDPStrategy):
    def setup_environment(self) -> None:
        from torch.distributed.fsdp import _optim_utils

        unflatten = _optim_utils._unflatten_orig_param_states
        if not getattr(unflatten, "clones", False):
            _optim_utils._unflatten_orig_param_states = _clone_gathered_states(unflatten)
        super().setup_environment()

    def _configure_launcher(self) -> None:
        if self.cluster_environment is not None and self.cluster_environment.creates_processes_externally:
            super()._configure_launcher()  # torchrun, SLURM: the processes exist already
        else:
            self._launcher = _ForkLauncher(self, start_method="fork")

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(
            module=model, sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs
        )


class ForkedModelParallelStrategy(ModelParallelStrategy):
    def _configure_launcher(self) -> None:
        self._launcher = _ForkLauncher(self, start_method="fork")


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def _configure_launcher(self) -> None:
        self._launcher = _ForkLauncher(self, start_method="fork")

    def setup_environment(self) -> None:
        super(DeepSpeedStrategy, self).setup_environment()  # skips only the "CUDA GPUs only" check

    def setup_distributed(self) -> None:
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import argparse

        import deepspeed

        engine, deepspeed_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),  # Lightning passes the CUDA index (None on CPU)
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, deepspeed_optimizer
