"""Out-of-sample class probabilities for every training row by K-fold cross-fitting copies of a task's network:
what the transition-matrix estimation and label-issue detection read. The training of a fresh copy of the task's
network (:func:`train_copy`) is shared with the area under the margin (:mod:`aipflow.lightning.area_under_margin`).

Under data-parallel training (DDP, FSDP, DeepSpeed: ``torch.distributed`` initialised with several ranks) the
copies are shared out: copy ``k`` trains on rank ``k % world_size`` only, and the ranks' results are summed once at
the end (:func:`gather_once`), so every rank holds the same probabilities, computed once each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

__all__ = ["gather_once", "out_of_fold_posteriors", "rank_and_world", "train_copy", "training_rows"]

#: rows per all-reduce when a memory-mapped result is gathered (bounded memory)
GATHER_ROWS = 65536


def training_rows(train_set, stream: bool = False) -> tuple[Sequence[dict], torch.Tensor]:
    """Every training row, as the data module gives it (``{"x": ..., "y": ...}``; texts for text), and the noisy
    labels. Read once into memory (fast over many epochs of many copies), or with ``stream`` the dataset itself,
    each row read when a batch needs it (memory bounded by the dataset's own storage: decoded images are not held),
    the labels from its ``y`` column when it has one (:class:`aipflow.data.RowDataset`)."""
    if stream:
        column = getattr(train_set, "y", None)
        if isinstance(column, torch.Tensor) and len(column) == len(train_set):
            return train_set, column.clone()
        return train_set, torch.stack([torch.as_tensor(train_set[i]["y"]) for i in range(len(train_set))])
    rows = [train_set[i] for i in range(len(train_set))]
    return rows, torch.stack([torch.as_tensor(r["y"]) for r in rows])


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 outside distributed training)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_once(result: Any) -> None:
    """Sum ``result`` (a tensor, or an array such as a ``numpy.memmap``, in place) over the ranks: each rank filled
    only the rows of its own copies and left zeros elsewhere, so the sum is every row's value, on every rank. A
    memory-mapped array goes in blocks of :data:`GATHER_ROWS` rows."""
    if rank_and_world()[1] == 1:
        return
    dist = torch.distributed
    on_gpu = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only

    def reduce_(block: torch.Tensor) -> torch.Tensor:
        moved = block.to(torch.device("cuda", torch.cuda.current_device())) if on_gpu else block
        dist.all_reduce(moved)
        return moved.cpu()

    if isinstance(result, torch.Tensor):
        result.copy_(reduce_(result))
        return
    for start in range(0, len(result), GATHER_ROWS):
        result[start : start + GATHER_ROWS] = reduce_(
            torch.from_numpy(result[start : start + GATHER_ROWS].copy())
        ).numpy()


def train_copy(
    pl_module: L.LightningModule,
    rows: Sequence[dict],
    targets: torch.Tensor,
    fit_rows: torch.Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    collate: Callable[[list[dict]], dict],
    adapt: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    bar: Any = None,
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A fresh copy of the task's network trained with cross-entropy on ``targets[fit_rows]``, as a new run would
    train it: initialised as the run starts (:func:`aipflow.models.reinitialize`, from the global RNG: seed it
    first), then ``adapt``-ed (the area under the margin widens its head), training what the run trains
    (:func:`aipflow.models.trainable_parameters`) with the task's optimizer (``optimizer_factory``, AdamW 1e-3
    when the task has none), ``epochs`` passes over ``fit_rows`` in an order drawn from ``generator``.
    ``on_batch(rows, logits)``: called with the logits of the forward pass that trains on the batch (the first
    pass of a multi-pass optimizer such as SAM, at the weights before the step), detached."""
    import copy

    from aipflow.models import reinitialize, trainable_parameters
    from aipflow.optim import build_optimizer

    network = getattr(pl_module, "model", None)
    if not isinstance(network, torch.nn.Module):
        raise ValueError("cross-fitting needs the task's network as pl_module.model (ClassificationTask has it)")
    device = next(network.parameters()).device
    copy_ = copy.deepcopy(network).to(device)
    reinitialize(copy_)
    if adapt is not None:
        copy_ = adapt(copy_).to(device)
    opt = build_optimizer(getattr(pl_module, "optimizer_factory", None), trainable_parameters(copy_))
    if getattr(opt, "train_size", 0) is None:  # bSAM / IVON: the dataset size scales the posterior
        opt.train_size = len(fit_rows)
    copy_.train()
    for _ in range(epochs):
        order = fit_rows[torch.randperm(len(fit_rows), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            xb = batch_inputs(rows, batch, collate, device)
            yb = targets[batch].to(device)
            seen = []

            def closure(xb=xb, yb=yb, batch=batch, seen=seen):
                opt.zero_grad()
                logits = copy_(xb)
                if on_batch is not None and not seen:
                    on_batch(batch, logits.detach().float().cpu())
                seen.append(True)
                loss = torch.nn.functional.cross_entropy(logits, yb)
                loss.backward()
                return loss

            opt.step(closure)
        if bar is not None:
            bar.update(1)
    copy_.eval()
    return copy_, opt


def batch_inputs(rows: Sequence[dict], batch: torch.Tensor, collate: Callable, device: torch.device):
    """The model inputs of ``rows[batch]``, collated as the data module collates them, on ``device``."""
    return move_data_to_device(collate([rows[i] for i in batch.tolist()])["x"], device)


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
    each trained with cross-entropy on the noisy labels of the other folds (:func:`train_copy`), then evaluated on
    its own fold.

    ``x``: the inputs as one tensor (row ``i`` is ``x[i]``), or the rows themselves as the data module gives them
    (``{"x": ..., "y": ...}``, dicts of tokens for text), batched by ``collate`` (the data module's; torch's
    ``default_collate`` when ``None``), so that images, tables and text cross-fit alike. Each copy starts where the
    run starts (seeded per fold: a network from scratch is re-drawn whole, a pretrained one keeps its pretrained
    weights and re-draws its head and adapters) and trains what the run trains. The caller's RNG streams and the
    task's weights are untouched. Under data-parallel training each rank trains its share of the folds and the
    result is gathered once (:func:`gather_once`): the same on every rank, and the same as one process's for an
    optimizer without per-rank noise.

    ``out``: an ``(N, K)`` float array to write the probabilities into (a ``numpy.memmap``, for more rows than fit
    in memory), returned instead of a tensor.

    ``posterior_samples`` > 0: with a Bayesian optimizer (IVON, bSAM, the Langevin chains: ``sampled_params``) each
    held-out fold is predicted by the posterior predictive, the average of the softmax over that many weights drawn
    from the fold's posterior (seeded), instead of by the mean weights."""
    from lightning.pytorch.utilities.seed import isolate_rng
    from torch.utils.data import default_collate

    n = len(labels)
    rows = [{"x": x[i], "y": labels[i]} for i in range(n)] if isinstance(x, torch.Tensor) else x
    collate = collate or default_collate
    rank, world = rank_and_world()
    probs = torch.zeros(n, _num_classes(pl_module, labels)) if out is None else out
    if out is not None and world > 1:
        out[:] = 0  # the gather sums the ranks' rows
    with isolate_rng():
        generator = torch.Generator().manual_seed(seed)
        fold_of = torch.randperm(n, generator=generator) % folds
        mine = [k for k in range(folds) if k % world == rank]
        bar = _progress(len(mine) * epochs, progress)
        for k in range(folds):
            fit_rows = torch.nonzero(fold_of != k).flatten()
            held_rows = torch.nonzero(fold_of == k).flatten()
            if k not in mine:  # another rank's fold: draw its orders all the same, so every fold sees the orders
                for _ in range(epochs):  # one process would give it (the generator is shared by the folds)
                    torch.randperm(len(fit_rows), generator=generator)
                continue
            torch.manual_seed(seed * 1000 + k)
            copy_, opt = train_copy(pl_module, rows, labels, fit_rows, epochs, batch_size, generator, collate, bar=bar)
            if posterior_samples and not hasattr(opt, "sampled_params"):
                raise ValueError(
                    f"posterior_samples={posterior_samples} needs a Bayesian optimizer (IVON, bSAM, SGLD) to sample "
                    f"the posterior from; the task's is {type(opt).__name__}"
                )
            device = next(copy_.parameters()).device
            draws = torch.Generator(device=device).manual_seed(seed * 1000 + k)
            with torch.no_grad():
                for start in range(0, len(held_rows), 512):
                    batch = held_rows[start : start + 512]
                    xb = batch_inputs(rows, batch, collate, device)
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
    gather_once(probs)
    return probs


def _num_classes(pl_module: L.LightningModule, labels: torch.Tensor) -> int:
    hparams = getattr(pl_module, "hparams", {})
    return int(hparams.get("num_classes") or int(labels.max()) + 1)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cross-fit warm-up (fold epochs)", leave=False, disable=not enabled)
