"""The one base of every aipflow task: the network, the optimizer and LR scheduler from config, the option check
before any data is read, the default callbacks, and the saved hyper-parameters.

A task declares only what it adds. Its ``__init__`` lists its own options and hands the rest on, and the command
(LightningCLI / jsonargparse) reads the inherited ones through ``**kwargs``::

    class MyTask(ClassificationTask):
        def __init__(self, model: nn.Module, temperature: float = 1.0, **kwargs) -> None:
            super().__init__(model, **kwargs)

The hyper-parameters saved in checkpoints are collected here over every ``__init__`` in the chain (a subclass
need not call ``save_hyperparameters``); modules and factories are left out (they are saved as weights, or are
code).
"""

from __future__ import annotations

import inspect

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from torch import nn

from aipflow.models import trainable_parameters
from aipflow.optim import build_optimizer

__all__ = ["Task", "check_optimizer_options"]

LR_SCHEDULER_INTERVALS = ("epoch", "step")


class Task(L.LightningModule):
    """What every task owns.

    Args:
        model: the network.
        optimizer: optimizer factory over :meth:`trainable_parameters` (AdamW, lr 1e-3, weight decay 1e-2, when
            omitted: :func:`aipflow.optim.build_optimizer`).
        lr_scheduler: scheduler factory over the optimizer (``torch.optim.lr_scheduler.*``).
        lr_scheduler_interval: ``"epoch"`` or ``"step"``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
    ) -> None:
        if lr_scheduler_interval not in LR_SCHEDULER_INTERVALS:
            raise ValueError(f"model.lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}")
        super().__init__()
        frame = inspect.currentframe()
        self.save_hyperparameters(ignore=_not_saved(frame), frame=frame)
        self.model = model
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self._configuration_checked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def trainable_parameters(self) -> list:
        """What the optimizer updates: the network's ``parameter_groups()`` when it has them (e.g. layer-wise
        learning-rate decay: groups with an ``lr_scale``), else every parameter of the task that requires a gradient
        (a frozen backbone gets no optimizer state, no weight decay and, with bSAM / IVON, no noise; a loss that
        learns, T-Revision's correction, is included)."""
        declares_groups = callable(getattr(self.model, "parameter_groups", None))
        params = trainable_parameters(self.model if declares_groups else self)
        if not params:
            raise ValueError("model: no parameter requires a gradient, nothing would train (is everything frozen?)")
        return params

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_factory, self.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.lr_scheduler_interval},
        }

    def configure_callbacks(self) -> list:
        # what the trainer lacks (a model callback would replace the trainer's own): the multi-pass integration in
        # case the entry point is not installed, the RNG state a resumed run needs, the non-finite guard
        from aipflow.lightning.defaults import default_callbacks

        return default_callbacks(self.trainer.callbacks)

    def check_configuration(self) -> None:
        """What can be refused before any data is read (the ``aipflow`` command calls it after parsing; ``fit``
        calls it at set-up otherwise): the optimizer's options. A subclass adds its own checks."""
        if self._configuration_checked:  # the command checks before any data is read; setup need not again
            return
        self._configuration_checked = True
        self.check_options(check_optimizer_options(self))

    def check_options(self, optimizer: torch.optim.Optimizer | None) -> None:
        """A subclass's own refusals before any data is read, given the optimizer built from the config (``None``
        when it cannot be built outside a Trainer)."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_configuration()


def _not_saved(frame) -> list[str]:
    """The ``__init__`` arguments of the chain that are not hyper-parameters: networks, losses and factories."""
    names = {"model", "loss", "optimizer", "lr_scheduler"}
    for arguments in collect_init_args(frame, [], classes=(HyperparametersMixin,)):
        names.update(k for k, v in arguments.items() if isinstance(v, nn.Module) or callable(v))
    return sorted(names)


def check_optimizer_options(module: L.LightningModule, field: str = "model.init_args.optimizer"):
    """Build ``module``'s optimizer once, before any data is read, so that a bad option (``lr < 0``, ``rho < 0``)
    is reported naming the config field rather than after data set-up; the RNG is isolated (an unseeded IVON draws
    its seed), so the run itself is unchanged. Returns the optimizer, or ``None`` when the module cannot build it
    outside a Trainer (its ``configure_optimizers`` needs the trainer: it is then checked when the run builds it)."""
    from lightning.pytorch.utilities.seed import isolate_rng

    from aipflow.config import ConfigError
    from aipflow.optim import OptionError

    try:
        with isolate_rng():
            built = module.configure_optimizers()
    except OptionError as exc:  # aipflow's optimizers say which option, as data
        raise ConfigError(f"{field}.init_args.{exc.field}: {exc}") from None
    except ValueError as exc:
        if not str(exc).startswith("Invalid "):  # not one of torch.optim's own option checks: left to the run
            return None
        option = _torch_option(str(exc))
        raise ConfigError(f"{field}.init_args.{option}: {exc}" if option else f"{field}: {exc}") from None
    except Exception:  # noqa: BLE001 - e.g. needs self.trainer: left to the run
        return None
    if isinstance(built, dict):
        built = built.get("optimizer")
    elif isinstance(built, (list, tuple)) and built:
        built = built[0][0] if isinstance(built[0], (list, tuple)) else built[0]
    return built if isinstance(built, torch.optim.Optimizer) else None


#: torch.optim's own checks raise ``ValueError("Invalid <option in words>: <value>")``
_TORCH_OPTION_WORDS = {
    "learning rate": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "epsilon": "eps",
    "beta parameter": "betas",
    "dampening": "dampening",
}


def _torch_option(message: str) -> str | None:
    """The option a ``torch.optim`` check names (``Invalid learning rate: -1.0`` -> ``lr``), or ``None``."""
    return next((option for words, option in _TORCH_OPTION_WORDS.items() if words in message), None)
