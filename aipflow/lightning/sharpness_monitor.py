"""The callback that logs the sharpness diagnostics of :mod:`aipflow.sharpness` during fit and plots them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from aipflow.sharpness import (
    _EvalMode,
    _prior_stds,
    gaussian_kl,
    hessian_top_eigenvalues,
    hessian_trace,
    pac_bayes_bound,
    plot_sharpness,
    posterior_average_variance,
    worst_case_sharpness,
)

__all__ = ["SharpnessMonitor"]


class SharpnessMonitor(L.Callback):
    """Every ``every_n_epochs`` epochs (and before the first), on the first ``num_batches`` batches of the training
    set in order (the same every time, drawn without touching any random state): ``sharpness/lambda_max`` (Lanczos,
    ``lanczos_iterations``), ``sharpness/hessian_trace`` (Hutchinson, ``trace_samples``), ``sharpness/m_sharpness``
    (``rho``, sub-batches of ``m``) and ``sharpness/adaptive_sharpness`` (``adaptive_rho``), and with IVON / bSAM
    ``sharpness/posterior_variance``, ``sharpness/gibbs_error`` and ``sharpness/pac_bayes_bound`` (``delta``,
    ``posterior_samples``). The loss is the cross-entropy of the network's logits. Logged to the run's logger,
    kept in the checkpoint, and plotted at the end of fit to ``<log dir>/sharpness.png``."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_batches: int = 4,
        lanczos_iterations: int = 20,
        trace_samples: int = 10,
        rho: float = 0.05,
        adaptive_rho: float = 0.5,
        m: int | None = 128,
        ascent_steps: int = 1,
        posterior_samples: int = 8,
        delta: float = 0.05,
        seed: int = 0,
        plot: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("num_batches", num_batches)):
            if value < 1:
                raise ValueError(f"SharpnessMonitor.{name} must be >= 1, got {value}")
        self.every_n_epochs, self.num_batches = every_n_epochs, num_batches
        self.lanczos_iterations, self.trace_samples = lanczos_iterations, trace_samples
        self.rho, self.adaptive_rho, self.m, self.ascent_steps = rho, adaptive_rho, m, ascent_steps
        self.posterior_samples, self.delta, self.seed, self.plot = posterior_samples, delta, seed, plot
        self.history: list[dict[str, float]] = []
        self._batches: list[Any] | None = None

    # ------------------------------------------------------------------------------------------- the batches
    def _fixed_batches(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Any]:
        if self._batches is None:
            from torch.utils.data import DataLoader

            loader = trainer.train_dataloader
            if loader is None:
                trainer.fit_loop.setup_data()
                loader = trainer.train_dataloader
            loader = getattr(loader, "loaders", loader)  # a CombinedLoader's
            ordered = DataLoader(  # its own generator: an iterator's base seed would otherwise come from torch's RNG
                loader.dataset,
                batch_size=loader.batch_size,
                shuffle=False,
                collate_fn=loader.collate_fn,
                generator=torch.Generator().manual_seed(self.seed),
            )
            batches = []
            for batch in ordered:
                batches.append(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))
                if len(batches) == self.num_batches:
                    break
            self._batches = batches
        return self._batches

    # ------------------------------------------------------------------------------------------- measuring
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        batches = self._fixed_batches(trainer, pl_module)
        model = pl_module
        values: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        values["lambda_max"] = hessian_top_eigenvalues(
            model, batches, iterations=self.lanczos_iterations, seed=self.seed
        )[0]
        values["hessian_trace"] = hessian_trace(model, batches, samples=self.trace_samples, seed=self.seed)[0]
        values["m_sharpness"] = worst_case_sharpness(model, batches, self.rho, m=self.m, steps=self.ascent_steps)
        values["adaptive_sharpness"] = worst_case_sharpness(
            model, batches, self.adaptive_rho, adaptive=True, m=self.m, steps=self.ascent_steps
        )
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if optimizer is not None and hasattr(optimizer, "posterior_std"):
            values.update(self._posterior(optimizer, model, batches))
        return values

    @torch.no_grad()
    def _posterior(self, optimizer: Any, model: nn.Module, batches: list[Any]) -> dict[str, float]:
        out = {"posterior_variance": posterior_average_variance(optimizer)}
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        wrong = total = 0
        with _EvalMode(model):
            for _ in range(self.posterior_samples):
                with optimizer.sampled_params(generator=generator):
                    for batch in batches:
                        x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])
                        wrong += int((model(x).argmax(1) != y).sum())
                        total += len(y)
        out["gibbs_error"] = wrong / max(total, 1)
        priors = _prior_stds(optimizer)
        size = getattr(optimizer, "train_size", None)
        if priors is not None and size:
            means = [p.detach() for _, p in optimizer._trainable()]
            kl = gaussian_kl(means, optimizer.posterior_std(), priors)
            out["kl"] = kl
            out["pac_bayes_bound"] = pac_bayes_bound(out["gibbs_error"], kl, int(size), self.delta)
        return out

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = self.measure(trainer, pl_module)
        self.history.append(values)
        for key, value in values.items():
            if key != "epoch":
                pl_module.log(f"sharpness/{key}", value, rank_zero_only=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history:  # not on a resume: the starting point was measured then
            values = self.measure(trainer, pl_module)
            values["epoch"] = -1.0
            self.history.append(values)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plot and trainer.is_global_zero and self.history:
            folder = Path(trainer.log_dir or trainer.default_root_dir)
            plot_sharpness({"run": self.history}, folder / "sharpness.png")

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
