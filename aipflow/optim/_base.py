"""What SAM, bSAM and IVON share: a closure-driven step with several loss evaluations per step.

The closure protocol. ``step(closure)`` calls ``closure()`` (or ``closure(k)`` for sub-batch ``k`` when the
optimizer splits the batch, as bSAM does), which must run forward + backward and return the loss. A plain
function is enough in a hand-written loop. An integration (aipflow's Lightning callback) may hand a richer
closure object with any of:

- ``found_inf``: set true when the last call produced non-finite gradients (fp16 AMP): the optimizer restores
  the weights exactly and skips the whole step;
- ``descent_ready()``: called once per step on the descent gradient, before the update (gradient clipping and
  ``on_before_optimizer_step`` happen there, once);
- ``sync(tensors)``: averages the given tensors over data-parallel ranks in place (one collective).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.optim import Optimizer


class MultiPassOptimizer(Optimizer):
    """Base of optimizers whose ``step`` evaluates the loss more than once; see the module docstring."""

    #: how many sub-batches the step splits a batch into (1: the closure takes no argument)
    num_subbatches: int = 1

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # torch casts loaded state to each parameter's dtype; ours is fp32 by design (bf16/fp16 parameters keep
        # fp32 momentum, precision and Hessian), so put the saved tensors back, only moved to the device
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if isinstance(value, Tensor):
                    self.state[p][key] = value.to(device=p.device)

    def _evaluate(self, closure: Callable, sub_batch: int | None = None) -> Tensor | None:
        """Run one forward/backward; ``None`` when the integration reports non-finite gradients."""
        if _is_bare_lightning_closure(closure):
            raise RuntimeError(
                f"{type(self).__name__} got Lightning's plain closure: inside a Trainer it needs aipflow's "
                "SharpnessAwareTraining callback (logging, clipping and hooks once per step, fp16 scaling, DDP). "
                "Every Trainer gets it when aipflow is installed with pip (entry point lightning.pytorch."
                "callbacks_factory); otherwise add aipflow.lightning.SharpnessAwareTraining() to Trainer(callbacks=...)"
            )
        with torch.enable_grad():
            loss = closure() if sub_batch is None else closure(sub_batch)
        if getattr(closure, "found_inf", False):
            return None
        if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
            raise FloatingPointError(
                f"{type(self).__name__}: the closure returned a non-finite loss ({float(loss)}); the weights were "
                "left unchanged. Lower the learning rate, check the data, or use AMP with a grad scaler."
            )
        return loss

    @staticmethod
    def _descent_ready(closure: Callable) -> None:
        hook = getattr(closure, "descent_ready", None)
        if hook is not None:
            hook()

    @staticmethod
    def _sync(closure: Callable, tensors: list[Tensor]) -> None:
        sync = getattr(closure, "sync", None)
        if sync is not None and tensors:
            sync(tensors)

    def _trainable(self) -> list[tuple[dict, Tensor]]:
        return [(group, p) for group in self.param_groups for p in group["params"] if p.requires_grad]


def _is_bare_lightning_closure(closure: Callable) -> bool:
    """Lightning's precision plugins hand ``partial(Precision._wrap_closure, ...)``; aipflow's driver is an object."""
    func = getattr(closure, "func", None)
    return getattr(func, "__name__", "") == "_wrap_closure" and "lightning" in getattr(func, "__module__", "")


class BayesianMixin:
    """Posterior sampling and checkpointing for optimizers whose parameters hold the posterior mean, which define
    ``posterior_std()`` (one tensor per trainable parameter, in ``_trainable()`` order), a ``train_size`` (the
    dataset size that scales the posterior) and ``noise`` (:class:`NoiseGenerators`).

    With ``impl="triton"`` the noise is generated inside the kernels by Philox from one seed per sample (the
    seeds of the last step are in ``last_noise_seeds``); the other impls draw it with ``torch.randn``. Both are
    standard normal, but the two streams differ, so runs are reproducible per impl."""

    last_noise_seeds: list[int]

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["posterior"] = {"train_size": self.train_size, "noise": self.noise.state_dict()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("posterior", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            if self.train_size is None:
                self.train_size = extra["train_size"]
            self.noise.load_state_dict(extra["noise"])

    def _init_noise(self, seed: int | None) -> None:
        self.noise = NoiseGenerators(seed)
        self.last_noise_seeds = []

    def _philox_seed(self) -> int:
        """A seed for the Triton kernels' in-kernel Philox noise, drawn from the (checkpointed) CPU generator so
        that a resumed run draws the same noise; recorded in ``last_noise_seeds``."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.noise(torch.device("cpu"))))
        self.last_noise_seeds.append(seed)
        return seed

    @contextmanager
    def sampled_params(self, generator: torch.Generator | None = None) -> Iterator[None]:
        """Inside the block the parameters hold one posterior sample ``m + std * z``; the mean is restored
        exactly (copied back) on exit, also after an exception."""
        pairs = self._trainable()
        means = [p.detach().clone() for _, p in pairs]
        with torch.no_grad():
            for (_, p), m, std in zip(pairs, means, self.posterior_std(), strict=True):
                z = torch.randn(p.shape, dtype=torch.float32, device=p.device, generator=generator)
                p.copy_((m.float() + z * std).to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), m in zip(pairs, means, strict=True):
                    p.copy_(m)


class NoiseGenerators:
    """One ``torch.Generator`` per device, seeded once; its state travels in the optimizer's state_dict so that
    a resumed run draws the same noise as the uninterrupted one. ``per_rank``: each data-parallel rank draws its
    own stream (IVON / bSAM: more Monte-Carlo samples per step, the averaged update identical on every rank); off
    for noise added to the weights themselves (Langevin), which must be the same on every rank."""

    def __init__(self, seed: int | None, per_rank: bool = True) -> None:
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self.per_rank = per_rank
        self._generators: dict[str, torch.Generator] = {}

    def __call__(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            distributed = self.per_rank and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed + 1_000_003 * rank)
        return self._generators[key]

    def get_state(self) -> dict[str, Tensor]:
        return {key: g.get_state() for key, g in self._generators.items()}

    def set_state(self, states: dict[str, Tensor]) -> None:
        for key, state in states.items():
            self(torch.device(key)).set_state(state.cpu())  # generator states are CPU byte tensors

    def state_dict(self) -> dict:
        return {"seed": self.seed, "generators": self.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self._generators.clear()
        self.set_state(state["generators"])


def local_part(t: Tensor) -> Tensor:
    """This rank's part of a DTensor (FSDP2's ``fully_shard``, tensor parallel), sharing its storage, so that
    in-place updates reach the parameter; any other tensor as it is. Call under ``torch.no_grad``."""
    if type(t) is torch.Tensor or type(t) is torch.nn.Parameter:  # the common case, without importing DTensor
        return t
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def is_distributed_tensor(t: Tensor) -> bool:
    return local_part(t) is not t


def grad_or_zeros(p: Tensor) -> Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def build_optimizer(factory: Callable[[list], Optimizer] | None, params: list) -> Optimizer:
    """A run's optimizer over ``params`` (tensors or parameter groups): ``factory(params)``, or AdamW (lr 1e-3,
    weight decay 1e-2) without one; a group's ``lr_scale`` multiplies its learning rate (layer-wise decay, a head's
    own scale). The task and the copies it cross-fits build theirs here."""
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2) if factory is None else factory(params)
    for group in optimizer.param_groups:
        if "lr_scale" in group:
            group["lr"] = group["lr"] * group["lr_scale"]
    return optimizer


class OptionError(ValueError):
    """A bad optimizer option, as data: ``field`` (the argument's name), the ``value`` given and what was
    ``expected``. The message reads ``"<field> must <expected>, got <value>"``; the command turns ``field`` into the
    config's path (``model.init_args.optimizer.init_args.<field>``) without reading the message."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        shown = value if isinstance(value, (int, float)) else repr(value)
        super().__init__(f"{field} must {expected}, got {shown}")


def check_beta(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise OptionError(name, value, "lie in [0, 1)")


def check_positive(name: str, value: float, allow_zero: bool = False, allow_inf: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (math.isinf(value) and not allow_inf) or math.isnan(value):
        raise OptionError(name, value, "be >= 0" if allow_zero else "be > 0")


def check_count(name: str, value: float, least: int) -> None:
    """An integer option (a count) of at least ``least``."""
    if int(value) != value or value < least:
        raise OptionError(name, value, f"be an integer >= {least}")
