"""Out-of-sample class probabilities for every training row by K-fold cross-fitting copies of a task's network:
what the transition-matrix estimation and label-issue detection read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

__all__ = ["out_of_fold_posteriors", "training_rows"]


def training_rows(train_set) -> tuple[list, torch.Tensor]:
    """Every training row once, as the data module gives it (``{"x": ..., "y": ...}``; token lists for text), and
    the noisy labels."""
    rows = [train_set[i] for i in range(len(train_set))]
    return rows, torch.stack([torch.as_tensor(r["y"]) for r in rows])


def out_of_fold_posteriors(
    pl_module: L.LightningModule,
    x: torch.Tensor | Sequence[dict],
    labels: torch.Tensor,
    folds: int,
    epochs: int,
    batch_size: int,
    seed: int,
    progress: bool = False,
    collate: Callable[[list[dict]], dict] | None = None,
    out: Any = None,
    posterior_samples: int = 0,
) -> torch.Tensor | Any:
    """``P(noisy label | x)`` for every row from a copy of the task's network that never saw it: ``folds`` copies,
    each trained with cross-entropy on the noisy labels of the other folds, then evaluated on its own fold.

    ``x``: the inputs as one tensor (row ``i`` is ``x[i]``), or the rows themselves as the data module gives them
    (``{"x": ..., "y": ...}``, dicts of tokens for text), batched by ``collate`` (the data module's; torch's
    ``default_collate`` when ``None``), so that images, tables and text cross-fit alike. Each copy starts where the
    run starts (:func:`aipflow.models.reinitialize`, seeded per fold: a network from scratch is re-drawn whole, a
    pretrained one keeps its pretrained weights and re-draws its head and adapters) and trains what the run trains
    (:func:`aipflow.models.trainable_parameters`, with the task's optimizer: ``optimizer_factory``, AdamW 1e-3 when
    the task has none). The caller's RNG streams and the task's weights are untouched.

    ``out``: an ``(N, K)`` float array to write the probabilities into (a ``numpy.memmap``, for more rows than fit
    in memory), returned instead of a tensor.

    ``posterior_samples`` > 0: with a Bayesian optimizer (IVON, bSAM: ``sampled_params``) each held-out fold is
    predicted by the posterior predictive, the average of the softmax over that many weights drawn from the
    fold's posterior (seeded), instead of by the mean weights."""
    import copy

    from lightning.pytorch.utilities.seed import isolate_rng
    from torch.utils.data import default_collate

    from aipflow.models import reinitialize, trainable_parameters
    from aipflow.optim import build_optimizer

    network = getattr(pl_module, "model", None)
    if not isinstance(network, torch.nn.Module):
        raise ValueError("cross-fitting needs the task's network as pl_module.model (ClassificationTask has it)")
    device = next(network.parameters()).device
    n = len(labels)
    rows = [{"x": x[i], "y": labels[i]} for i in range(n)] if isinstance(x, torch.Tensor) else x
    collate = collate or default_collate

    def inputs(indices: torch.Tensor):
        return move_data_to_device(collate([rows[i] for i in indices.tolist()])["x"], device)

    probs = torch.zeros(n, _num_classes(pl_module, labels)) if out is None else out
    with isolate_rng():
        generator = torch.Generator().manual_seed(seed)
        fold_of = torch.randperm(n, generator=generator) % folds
        bar = _progress(folds * epochs, progress)
        for k in range(folds):
            torch.manual_seed(seed * 1000 + k)
            copy_ = copy.deepcopy(network).to(device)
            reinitialize(copy_)
            fit_rows = torch.nonzero(fold_of != k).flatten()
            held_rows = torch.nonzero(fold_of == k).flatten()
            opt = build_optimizer(getattr(pl_module, "optimizer_factory", None), trainable_parameters(copy_))
            if getattr(opt, "train_size", 0) is None:  # bSAM / IVON: the dataset size scales the posterior
                opt.train_size = len(fit_rows)
            copy_.train()
            for _ in range(epochs):
                order = fit_rows[torch.randperm(len(fit_rows), generator=generator)]
                for start in range(0, len(order), batch_size):
                    batch = order[start : start + batch_size]
                    xb, yb = inputs(batch), labels[batch].to(device)

                    def closure(xb=xb, yb=yb, opt=opt, net=copy_):
                        opt.zero_grad()
                        loss = torch.nn.functional.cross_entropy(net(xb), yb)
                        loss.backward()
                        return loss

                    opt.step(closure)
                bar.update(1)
            if posterior_samples and not hasattr(opt, "sampled_params"):
                raise ValueError(
                    f"posterior_samples={posterior_samples} needs a Bayesian optimizer (IVON, bSAM) to sample the "
                    f"posterior from; the task's is {type(opt).__name__}"
                )
            copy_.eval()
            draws = torch.Generator(device=device).manual_seed(seed * 1000 + k)
            with torch.no_grad():
                for start in range(0, len(held_rows), 512):
                    batch = held_rows[start : start + 512]
                    xb = inputs(batch)
                    if posterior_samples:
                        held = torch.zeros(len(batch), probs.shape[1], device=device)
                        for _ in range(posterior_samples):
                            with opt.sampled_params(generator=draws):
                                held += copy_(xb).float().softmax(1)
                        held = (held / posterior_samples).cpu()
                    else:
                        held = copy_(xb).float().softmax(1).cpu()
                    probs[batch.numpy() if out is not None else batch] = held if out is None else held.numpy()
        bar.close()
    return probs


def _num_classes(pl_module: L.LightningModule, labels: torch.Tensor) -> int:
    hparams = getattr(pl_module, "hparams", {})
    return int(hparams.get("num_classes", int(labels.max()) + 1))


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cross-fit warm-up (fold epochs)", leave=False, disable=not enabled)
