"""What SGLD and pSGLD share: Langevin noise on the weights, the temperature, and the collection of thinned
posterior samples that the task's posterior-predictive evaluation (``posterior_samples``) averages over.

The dynamics (mean-field / gradient Langevin dynamics, Euler-Maruyama with step ``lr``)::

    d theta = -grad( L(theta) + wd/2 ||theta||^2 ) dt + sqrt(2 T / N) dW

with ``L`` the mean loss of a batch, ``N`` the training-set size (``train_size``; aipflow's Lightning integration
fills it) and ``T`` the temperature: the stationary density is proportional to
``exp(-(N / T) (L + wd/2 ||theta||^2))``, at ``T = 1`` the Bayesian posterior of a likelihood ``exp(-N L)`` under
the Gaussian prior ``N(0, 1 / (N wd))``. In the theory line's notation (``dX = -grad(L + lambda/2 ||X||^2) dt +
sqrt(2 / beta) dW``), ``beta = N / T`` and ``lambda = wd``. Welling & Teh's step ``epsilon`` on the unnormalised
log posterior corresponds to ``lr = epsilon N / 2``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from aipflow.optim import functional
from aipflow.optim._base import MultiPassOptimizer, NoiseGenerators, check_count, check_positive, grad_or_zeros


class LangevinOptimizer(MultiPassOptimizer):
    """Base of SGLD and pSGLD: one gradient per step, Gaussian noise added to the weights (the same on every
    data-parallel rank), and a sample collector: after ``burn_in`` steps, every ``thinning``-th state of the
    chain is copied (at most ``max_samples``, the oldest dropped first), kept in checkpoints, and drawn from by
    :meth:`sampled_params` for posterior-predictive evaluation."""

    #: pSGLD keeps a running average of squared gradients (the preconditioner)
    preconditioned: bool = False

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        defaults: dict,
        temperature: float,
        train_size: float | None,
        burn_in: int,
        thinning: int,
        max_samples: int,
        seed: int | None,
        impl: str,
    ) -> None:
        check_positive("lr", defaults["lr"])
        check_positive("weight_decay", defaults["weight_decay"], allow_zero=True)
        check_positive("temperature", temperature, allow_zero=True)
        if train_size is not None:
            check_positive("train_size", train_size)
        for name, value, least in (("burn_in", burn_in, 0), ("thinning", thinning, 1), ("max_samples", max_samples, 0)):
            check_count(name, value, least)
        functional.check_impl(impl)
        super().__init__(params, defaults)
        self.temperature = float(temperature)
        self.train_size = train_size
        self.burn_in, self.thinning, self.max_samples = int(burn_in), int(thinning), int(max_samples)
        self.impl = impl
        self.noise = NoiseGenerators(seed, per_rank=False)
        self.steps_taken = 0
        self.samples: list[list[Tensor]] = []

    def _noise_variance(self, group: dict) -> float:
        if self.temperature == 0.0:
            return 0.0
        if self.train_size is None:
            raise ValueError(
                f"{type(self).__name__} needs train_size (N, the number of training examples: the noise variance is "
                "2 lr T / N); pass it, or let aipflow's Lightning integration read it from the data module"
            )
        return 2.0 * group["lr"] * self.temperature / float(self.train_size)

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> Tensor | None:
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure running forward + backward")
        loss = self._evaluate(closure)
        if loss is None:  # non-finite fp16 gradients: the step is skipped, the weights untouched
            return None
        trainable = self._trainable()
        grads = [grad_or_zeros(p) for _, p in trainable]
        for (_, p), g in zip(trainable, grads, strict=True):
            p.grad = g
        self._sync(closure, grads)
        self._descent_ready(closure)
        impl = functional.resolve_impl(self.impl, [p for _, p in trainable])
        seed = None
        if impl == "triton":  # one Philox seed per step, from the checkpointed CPU generator (exact resume)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.noise(torch.device("cpu"))))
        offset = 0
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                continue
            variance = self._noise_variance(group)
            if impl == "triton":
                noises = (seed, offset)
                offset += sum(p.numel() for p in params)
            else:
                noises = [
                    torch.randn(p.shape, dtype=torch.float32, device=p.device, generator=self.noise(p.device))
                    for p in params
                ]
            square_avgs = None
            if self.preconditioned:
                square_avgs = [self._square_avg(p) for p in params]
            functional.langevin_update(
                params,
                [p.grad for p in params],
                noises,
                square_avgs,
                group["lr"],
                group["weight_decay"],
                variance,
                group.get("alpha", 0.99),
                group.get("eps", 1e-5),
                impl,
            )
        self.steps_taken += 1
        self._collect()
        return loss

    def _square_avg(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "square_avg" not in state:
            # float32 for half-precision parameters (as the update computes), their own dtype otherwise
            dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
            state["square_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        return state["square_avg"]

    def _collect(self) -> None:
        after = self.steps_taken - self.burn_in
        if self.max_samples == 0 or after <= 0 or after % self.thinning != 0:
            return
        self.samples.append([p.detach().clone() for _, p in self._trainable()])
        if len(self.samples) > self.max_samples:
            self.samples.pop(0)

    # -------------------------------------------------------------------------------------------- posterior
    @contextmanager
    def sampled_params(self, generator: torch.Generator | None = None) -> Iterator[None]:
        """Inside the block the parameters hold one collected sample, drawn uniformly (with replacement, by
        ``generator``); before any is collected, the chain's current state. Restored exactly on exit."""
        pairs = self._trainable()
        if not self.samples:
            yield
            return
        device = generator.device if generator is not None else torch.device("cpu")
        index = int(torch.randint(len(self.samples), (1,), generator=generator, device=device))
        current = [p.detach().clone() for _, p in pairs]
        with torch.no_grad():
            for (_, p), s in zip(pairs, self.samples[index], strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), c in zip(pairs, current, strict=True):
                    p.copy_(c)

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["langevin"] = {
            "train_size": self.train_size,
            "noise": self.noise.state_dict(),
            "steps_taken": self.steps_taken,
            "samples": [list(sample) for sample in self.samples],
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("langevin", None)
        super().load_state_dict(state_dict)
        if extra is None:
            return
        if self.train_size is None:
            self.train_size = extra["train_size"]
        self.noise.load_state_dict(extra["noise"])
        self.steps_taken = int(extra["steps_taken"])
        params = [p for _, p in self._trainable()]
        self.samples = [
            [s.to(device=p.device, dtype=p.dtype) for s, p in zip(sample, params, strict=True)]
            for sample in extra["samples"]
        ]
