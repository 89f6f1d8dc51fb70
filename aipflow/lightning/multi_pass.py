"""Multi-pass optimizers (SAM, ASAM, bSAM, IVON) inside Lightning's automatic optimization, done right.

Plain Lightning gets them wrong in several ways: ``16-mixed`` calls ``scaler.step(optimizer)`` without the
closure; with ``accumulate_grad_batches`` only the last micro-batch is re-evaluated at the perturbed point;
gradient clipping, ``on_before_optimizer_step`` and ``self.log`` fire on every closure call; BatchNorm running
statistics move on every pass; under DDP every pass all-reduces.

:class:`SharpnessAwareTraining` (a callback; every ``Trainer`` gets it through Lightning's
``callbacks_factory`` entry point when aipflow is installed) fixes all of these. At
``setup`` it gives the trainer's precision plugin a subclass whose ``optimizer_step`` drives a
:class:`~aipflow.optim.MultiPassOptimizer` with a closure object that

- runs Lightning's own closure once (the first pass: ``training_step`` as usual, logging once), and replays
  ``training_step`` + ``backward`` silently for every further pass (all micro-batches of an accumulation
  window, or sub-batch k for bSAM);
- unscales fp16 gradients after each pass and reports non-finite ones (``found_inf``), so the optimizer skips
  the whole step on every rank with its weights restored exactly; the grad scaler is updated once per step;
- clips the descent gradient and calls ``on_before_optimizer_step`` once (``descent_ready``);
- keeps BatchNorm running statistics from one pass (``bn_update``: first [default], second or both);
- under DDP, does not all-reduce the first pass (per-device perturbation, as the original SAM code) unless
  ``sync_first_pass``; SAM's second pass all-reduces through DDP as usual (one all-reduce per step); bSAM and
  IVON average their descent gradient and curvature in one flat all-reduce per step (``sync``);
- under FSDP (each rank's optimizer holds shards; every backward reduce-scatters the averaged gradient): SAM /
  ASAM take their norm over all shards (one all-reduce of the squared sum per step); bSAM and IVON keep their
  state per shard and each rank draws the noise of its own shard, so all ranks evaluate one sample of the
  whole model at the global batch (bSAM's sub-batch k is every rank's k-th slice); no further collective.

Other optimizers pass through untouched, so the callback is safe to add to any run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from aipflow.optim._base import MultiPassOptimizer
from aipflow.optim.sam import SAM
from aipflow.passes import extra_pass

BN_UPDATES = ("first", "second", "both")
ACCUMULATION_MODES = ("full", "per_micro_batch")


class SharpnessAwareTraining(Callback):
    """Makes multi-pass optimizers correct in ``Trainer`` (see the module docstring).

    Args:
        bn_update: which pass's BatchNorm running statistics are kept: ``"first"`` (at the current weights, the
            default), ``"second"`` (at the first perturbed/sampled point) or ``"both"`` (every pass updates).
        accumulation: with ``accumulate_grad_batches = k``, ``"full"`` perturbs with the whole accumulated
            gradient and recomputes the descent gradient over all k micro-batches (equal to full-batch SAM);
            ``"per_micro_batch"`` (SAM/ASAM) perturbs each micro-batch with its own gradient and sums the
            gradients at those k points (m-sharpness with m = the micro-batch; 3k passes instead of 2k).
        sync_first_pass: under DDP, all-reduce the first pass too (the perturbation then uses the global
            gradient; one more all-reduce per step).
    """

    def __init__(self, bn_update: str = "first", accumulation: str = "full", sync_first_pass: bool = False) -> None:
        if bn_update not in BN_UPDATES:
            raise ValueError(f"bn_update must be one of {BN_UPDATES}, got {bn_update!r}")
        if accumulation not in ACCUMULATION_MODES:
            raise ValueError(f"accumulation must be one of {ACCUMULATION_MODES}, got {accumulation!r}")
        self.bn_update = bn_update
        self.accumulation = accumulation
        self.sync_first_pass = sync_first_pass
        self.sharded = False  # set at fit start: whether each rank's optimizer holds shards (FSDP)
        self.micro_batches: list[tuple[Any, int]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        plugin = trainer.strategy.precision_plugin
        if not isinstance(plugin, _SharpnessAwarePrecision):
            plugin.__class__ = _with_sharpness_aware_step(type(plugin))
        plugin._aipflow_options = self

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sharded = _shards_parameters(trainer.strategy)
        self.sharded = sharded
        for optimizer in trainer.optimizers:
            _refuse_deepspeed(optimizer, trainer.strategy)
            if not isinstance(optimizer, MultiPassOptimizer):
                continue
            _refuse_distributed_tensors(optimizer, trainer.strategy)
            if isinstance(optimizer, SAM):  # SAM's norm spans the shards: one all-reduce of the squared sum
                optimizer.set_sharded(_all_reduce_sum if sharded else None)
            if not isinstance(optimizer, SAM) and trainer.accumulate_grad_batches > 1:
                raise ValueError(
                    f"{type(optimizer).__name__} with trainer.accumulate_grad_batches="
                    f"{trainer.accumulate_grad_batches} is not supported: its noise is drawn per step over the whole "
                    "batch; raise the batch size (and num_subbatches) instead"
                )
            # already here (before the sanity check, whose posterior-predictive validation needs N) when a data
            # module knows its size; otherwise from the train dataloader once it exists
            size = getattr(trainer.datamodule, "train_size", None)
            if getattr(optimizer, "train_size", 0) is None and size:
                optimizer.train_size = int(size)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, MultiPassOptimizer) and getattr(optimizer, "train_size", 0) is None:
                optimizer.train_size = _train_size(trainer, optimizer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % trainer.accumulate_grad_batches == 0:
            self.micro_batches = []
        self.micro_batches.append((batch, batch_idx))

    def state_dict(self) -> dict[str, Any]:
        return {"bn_update": self.bn_update, "accumulation": self.accumulation}


class AutomaticSharpnessAwareTraining(SharpnessAwareTraining):
    """The default integration, added to every ``Trainer`` through Lightning's ``lightning.pytorch.callbacks_factory``
    entry point, so that SAM / bSAM / IVON are correct in any LightningModule (a weaksup task, your own) without
    configuring anything. It steps aside when the run configures its own :class:`SharpnessAwareTraining` (that
    one's options win), and it passes every other optimizer through untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.active = not any(
            isinstance(cb, SharpnessAwareTraining) and not isinstance(cb, AutomaticSharpnessAwareTraining)
            for cb in trainer.callbacks
        )
        if self.active:
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            super().on_fit_start(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            super().on_train_start(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.active:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


def _shards_parameters(strategy) -> bool:
    """Whether each rank's optimizer holds shards of the parameters (FSDP, FSDP2 through ModelParallelStrategy)."""
    from lightning.pytorch.strategies import FSDPStrategy

    try:
        from lightning.pytorch.strategies import ModelParallelStrategy
    except ImportError:  # older Lightning
        ModelParallelStrategy = ()  # noqa: N806
    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def _refuse_distributed_tensors(optimizer: MultiPassOptimizer, strategy) -> None:
    """FSDP2 (``fully_shard``, e.g. in ``ModelParallelStrategy``'s ``configure_model``) and tensor parallelism turn
    parameters into DTensors. SAM / ASAM work on each rank's part, which must then be a shard on every mesh
    dimension (the squared norm is summed over all ranks: a replicated part would count twice); bSAM and IVON's
    state and noise are written for plain tensors (FSDPStrategy shards them)."""
    from torch.distributed.tensor import DTensor, Shard

    dtensors = [p for group in optimizer.param_groups for p in group["params"] if isinstance(p, DTensor)]
    if not dtensors:
        return
    name = f"{type(optimizer).__name__} with {type(strategy).__name__} and DTensor parameters"
    if not isinstance(optimizer, SAM):
        raise ValueError(
            f"{name} (FSDP2 fully_shard, tensor parallel) is not supported: its state and noise are written for "
            "plain tensors. Use strategy fsdp (FSDPStrategy shards bSAM / IVON's state) or ddp"
        )
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    for p in dtensors:
        if not all(isinstance(placement, Shard) for placement in p.placements) or p.device_mesh.size() != world:
            raise ValueError(
                f"{name}: a parameter is placed {tuple(p.placements)} on a mesh of {p.device_mesh.size()} of "
                f"{world} ranks; SAM's norm sums every rank's part, so each must be a distinct shard (fully_shard "
                "over all ranks; tensor parallel and replicated (HSDP) meshes are not supported)"
            )


def _refuse_deepspeed(optimizer, strategy) -> None:
    """DeepSpeed steps the optimizer itself (``engine.step()``, wrapped in its ZeRO / fp16 optimizer), without a
    closure, so a multi-pass optimizer inside would take plain steps or fail on its missing closure."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    inner = optimizer
    for _ in range(3):  # ZeRO / fp16 wrappers keep the client optimizer as .optimizer
        if isinstance(inner, MultiPassOptimizer):
            break
        inner = getattr(inner, "optimizer", None)
    if isinstance(inner, MultiPassOptimizer) and (inner is not optimizer or isinstance(strategy, DeepSpeedStrategy)):
        raise ValueError(
            f"{type(inner).__name__} with {type(strategy).__name__} is not supported: DeepSpeed steps the optimizer "
            f"itself ({type(optimizer).__name__}) without a closure, and SAM / ASAM / bSAM / IVON need their own "
            "passes. Use strategy ddp or fsdp with them, or a plain optimizer (AdamW, SGD) with DeepSpeed"
        )


def _all_reduce_sum(tensor: Tensor) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)


def _train_size(trainer: L.Trainer, optimizer) -> int:
    try:
        size = len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        size = None
    if not size:
        raise ValueError(
            f"{type(optimizer).__name__} needs the training-set size (train_size / ess) and it could not be read "
            "from the data module (train_size) or the train dataloader's dataset; set it in the optimizer's init_args"
        )
    return int(size)


class _SharpnessAwarePrecision:
    """Mixed into the trainer's precision plugin class; only ``optimizer_step`` of multi-pass optimizers changes."""

    _aipflow_options: SharpnessAwareTraining

    def optimizer_step(self, optimizer, model, closure, **kwargs):
        if not isinstance(optimizer, MultiPassOptimizer):
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        return _PassDriver(self, optimizer, model, closure, self._aipflow_options).run()


@functools.cache
def _with_sharpness_aware_step(cls: type) -> type:
    return type(f"SharpnessAware{cls.__name__}", (_SharpnessAwarePrecision, cls), {})


class _PassDriver:
    """The closure object handed to a multi-pass optimizer for one step (protocol in ``aipflow.optim._base``)."""

    def __init__(self, precision, optimizer: MultiPassOptimizer, module: L.LightningModule, closure, options):
        self.precision = precision
        self.optimizer = optimizer
        self.module = module
        self.trainer = module.trainer
        self.lightning_closure = closure
        self.options = options
        scaler = getattr(precision, "scaler", None)
        # a disabled scaler (FSDP's ShardedGradScaler made for CUDA, on CPU) scales nothing and keeps no state
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.calls = 0
        self.found_inf = False
        self._any_inf = None
        self._bn_initial = None
        self._bn_kept = None
        self._keep_pass = {"first": 0, "second": 1, "both": None}[options.bn_update]
        # SAM relies on DDP's own all-reduce in its last pass; the Bayesian ones average explicitly (sync)
        self._ddp_syncs_last_pass = isinstance(optimizer, SAM)

    # ---------------------------------------------------------------------------------------------- one step
    def run(self):
        try:
            result = self.optimizer.step(closure=self)
        finally:
            self._finish_bn()
        if self.scaler is not None:
            self._update_scaler()
        return result

    def __call__(self, sub_batch: int | None = None) -> Tensor | None:
        index = self.calls
        self.calls += 1
        self._bn_before(index)
        if index == 0:
            loss = self._first_pass(sub_batch)
        else:
            loss = self._replay(sub_batch)
        self._bn_after(index)
        if self.scaler is not None:
            # every rank must agree on skipping: ranks differ after a local pass, and shards always differ
            local = index == 0 or not self._ddp_syncs_last_pass or self.options.sharded
            self.found_inf = self._unscale_and_check(local=local)
        return loss

    def descent_ready(self) -> None:
        self._finish_bn()
        self.precision._after_closure(self.module, self.optimizer)

    def sync(self, tensors: list[Tensor]) -> None:
        # sharded (FSDP): every backward already averaged the gradient over ranks (reduce-scatter), and each rank's
        # tensors are its own shard, so there is nothing to average (averaging would mix different parameters)
        if self.options.sharded:
            return
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return
        world = torch.distributed.get_world_size()
        if world == 1:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        torch.distributed.all_reduce(flat)
        flat /= world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    # -------------------------------------------------------------------------------------------- the passes
    def _first_pass(self, sub_batch: int | None) -> Tensor | None:
        local = not self.options.sync_first_pass or not self._ddp_syncs_last_pass
        with self._no_sync(local), self._batch_swapped(sub_batch):
            return self.lightning_closure()

    def _replay(self, sub_batch: int | None) -> Tensor | None:
        micro = self.options.micro_batches or [(None, None)]
        if self.options.accumulation == "per_micro_batch" and isinstance(self.optimizer, SAM) and len(micro) > 1:
            return self._replay_per_micro_batch(micro)
        if sub_batch is not None:
            batch, batch_idx = micro[-1]
            micro = [(_slice_batch(batch, sub_batch, self.optimizer.num_subbatches), batch_idx)]
        self.optimizer.zero_grad()
        losses = []
        with self._muted_logging():
            for j, (batch, batch_idx) in enumerate(micro):
                last = j == len(micro) - 1
                with self._no_sync(not (last and self._ddp_syncs_last_pass)):
                    losses.append(self._forward_backward(batch, batch_idx))
        return torch.stack(losses).sum() if losses else None

    def _replay_per_micro_batch(self, micro: list) -> Tensor | None:
        """Called with the weights at w + e (SAM perturbed them with the accumulated gradient): for each
        micro-batch j, its own gradient at w, its own e_j, and its gradient at w + e_j, accumulated in ``.grad``
        (so that under DDP the last backward all-reduces the sum). Ends perturbed, as SAM expects."""
        sam: SAM = self.optimizer
        params = [p for g in sam.param_groups for p in g["params"]]
        sam.zero_grad()
        losses = []
        with self._muted_logging():
            for j, (batch, batch_idx) in enumerate(micro):
                sam.restore()
                accumulated = [p.grad for p in params]  # the sum so far, set aside while g_j is computed
                for p in params:
                    p.grad = None
                with self._no_sync(True):
                    self._forward_backward(batch, batch_idx)
                if self.scaler is not None and self._unscale_and_check(local=True):
                    return None
                sam.first_step()
                for p, acc in zip(params, accumulated, strict=True):
                    p.grad = acc
                with self._no_sync(j < len(micro) - 1):
                    losses.append(self._forward_backward(batch, batch_idx))
        return torch.stack(losses).sum()

    def _forward_backward(self, batch, batch_idx) -> Tensor:
        trainer = self.trainer
        output = trainer.strategy.training_step(batch, batch_idx)
        loss = output["loss"] if isinstance(output, dict) else output
        if loss is None:
            raise RuntimeError("training_step returned None during a sharpness-aware replay pass")
        loss = loss / trainer.accumulate_grad_batches  # as Lightning normalises each micro-batch
        trainer.strategy.backward(loss, self.optimizer)
        return loss.detach()

    @contextmanager
    def _batch_swapped(self, sub_batch: int | None) -> Iterator[None]:
        if sub_batch is None:
            yield
            return
        step_fn = getattr(self.lightning_closure, "_step_fn", None)
        kwargs = step_fn.args[0] if isinstance(step_fn, functools.partial) and step_fn.args else None
        if not isinstance(kwargs, dict) or "batch" not in kwargs:
            raise RuntimeError(
                "cannot hand sub-batches to Lightning's closure in this Lightning version; set num_subbatches=1"
            )
        full = kwargs["batch"]
        kwargs["batch"] = _slice_batch(full, sub_batch, self.optimizer.num_subbatches)
        try:
            yield
        finally:
            kwargs["batch"] = full

    @contextmanager
    def _muted_logging(self) -> Iterator[None]:
        module = self.module
        module.log = _silent  # instance attributes shadow the methods: self.log is a no-op in replays
        module.log_dict = _silent
        try:
            with extra_pass():  # per-sample state (ELR targets, ...) moves once per step
                yield
        finally:
            del module.log
            del module.log_dict

    def _no_sync(self, local: bool):
        model = self.trainer.strategy.model
        if local and isinstance(model, nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return nullcontext()

    # -------------------------------------------------------------------------------------------- BatchNorm
    def _bn_buffers(self) -> list[Tensor]:
        out = []
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training:
                out += [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
        return out

    def _bn_before(self, index: int) -> None:
        if self._keep_pass is None:
            return
        if index == 0:
            self._bn_initial = [b.clone() for b in self._bn_buffers()]
        if index == self._keep_pass and index > 0:
            _copy_into(self._bn_buffers(), self._bn_initial)

    def _bn_after(self, index: int) -> None:
        if self._keep_pass is not None and index == self._keep_pass:
            self._bn_kept = [b.clone() for b in self._bn_buffers()]

    def _finish_bn(self) -> None:
        if self._keep_pass is None:
            return
        kept = self._bn_kept if self._bn_kept is not None else self._bn_initial
        if kept is not None:
            _copy_into(self._bn_buffers(), kept)

    # ---------------------------------------------------------------------------------------------- fp16 AMP
    def _unscale_and_check(self, local: bool) -> bool:
        """Unscale this pass's gradients in place; True when any is non-finite (on any rank)."""
        scale = self.scaler.get_scale()
        grads: dict[tuple, list[Tensor]] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        device = next(iter(grads))[0] if grads else torch.device("cpu")
        found = torch.zeros(1, device=device)
        for (dev, _), gs in grads.items():
            found_here = torch.zeros(1, device=dev)
            torch._amp_foreach_non_finite_check_and_unscale_(gs, found_here, torch.full((1,), 1.0 / scale, device=dev))
            found += found_here.to(device)
        if local and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(found, op=torch.distributed.ReduceOp.MAX)
        self._any_inf = found if self._any_inf is None else torch.maximum(self._any_inf, found)
        return bool(found.item() > 0)

    def _update_scaler(self) -> None:
        # GradScaler.update() reads the found-inf flags that unscale_() records; record ours (all passes) instead
        found = self._any_inf if self._any_inf is not None else torch.zeros(1)
        state = self.scaler._per_optimizer_states[id(self.optimizer)]
        state["found_inf_per_device"] = {found.device: found.float()}
        self.scaler.update()


def _silent(*args, **kwargs) -> None:
    return None


def _copy_into(dst: list[Tensor], src: list[Tensor]) -> None:
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)


def _slice_batch(batch: Any, k: int, parts: int) -> Any:
    """The k-th of ``parts`` equal slices along dim 0 of every tensor in a (nested) batch."""
    if isinstance(batch, Tensor):
        if batch.shape[0] < parts:
            raise ValueError(f"a batch of {batch.shape[0]} cannot be split into num_subbatches={parts} sub-batches")
        return torch.tensor_split(batch, parts)[k]
    if isinstance(batch, dict):
        return type(batch)({key: _slice_batch(v, k, parts) for key, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        items = [_slice_batch(v, k, parts) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch
