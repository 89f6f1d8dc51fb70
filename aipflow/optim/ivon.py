"""IVON: Improved Variational Online Newton (Shen et al., "Variational Learning is Effective for Large Deep
Networks", ICML 2024), written from the paper's Algorithm 1.

A diagonal Gaussian posterior ``N(m, sigma^2)`` with ``sigma = 1 / sqrt(ess (h + delta))``. Per step, with S
Monte-Carlo samples ``theta_j = m + sigma eps_j``:

    g_hat = mean_j grad l(theta_j)
    h_hat = mean_j grad l(theta_j) * eps_j / sigma          (reparametrisation trick: g (theta - m) / sigma^2)
    g <- b1 g + (1 - b1) g_hat
    h <- b2 h + (1 - b2) h_hat + 0.5 (1 - b2)^2 (h - h_hat)^2 / (h + delta)    (keeps h > 0)
    m <- m - lr clip((g / (1 - b1^t) + delta m) / (h + delta), clip_radius)

Defaults: hess_init h0 = 1.0, b1 = 0.9, b2 = 0.99999, weight decay delta = 1e-4, 1 MC sample, no clipping,
``rescale_lr=True`` (the learning rate is multiplied by ``h0 + delta``, so that early steps match SGD's size and
SGD learning rates carry over). ``ess`` (lambda) is usually the training-set size. The parameters always hold
the mean m between steps; memory: m lives in the parameters, g and h are the state (2x), plus one transient
copy of m during a step (and an h_hat buffer when S > 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from aipflow.optim import functional
from aipflow.optim._base import (
    BayesianMixin,
    MultiPassOptimizer,
    check_beta,
    check_count,
    check_positive,
    grad_or_zeros,
)


class IVON(BayesianMixin, MultiPassOptimizer):
    """IVON. ``ess`` is required before the first step; aipflow's Lightning integration fills it with the
    training-set size when left ``None``."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.1,
        ess: float | None = None,
        hess_init: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99999,
        weight_decay: float = 1e-4,
        mc_samples: int = 1,
        clip_radius: float = float("inf"),
        rescale_lr: bool = True,
        seed: int | None = None,
        impl: str = "auto",
    ) -> None:
        check_positive("lr", lr)
        check_positive("hess_init", hess_init)
        check_beta("beta1", beta1)
        check_beta("beta2", beta2)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        check_positive("clip_radius", clip_radius, allow_inf=True)
        if ess is not None:
            check_positive("ess", ess)
        check_count("mc_samples", mc_samples, 1)
        functional.check_impl(impl)
        defaults = dict(
            lr=lr, hess_init=hess_init, beta1=beta1, beta2=beta2, weight_decay=weight_decay, clip_radius=clip_radius
        )
        super().__init__(params, defaults)
        self.ess = ess
        self.mc_samples = int(mc_samples)
        self.rescale_lr = rescale_lr
        self.impl = impl
        self._init_noise(seed)

    @property
    def train_size(self) -> float | None:  # the name the Lightning integration fills
        return self.ess

    @train_size.setter
    def train_size(self, value: float) -> None:
        self.ess = value

    def _lambda(self) -> float:
        if self.ess is None:
            raise ValueError(
                "IVON needs ess (the effective sample size lambda, usually the number of training examples); pass "
                "IVON(..., ess=N), or let aipflow's Lightning integration read it from the data module"
            )
        return float(self.ess)

    def _state_of(self, group: dict, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["momentum"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            state["hess"] = torch.full_like(
                p, group["hess_init"], dtype=torch.float32, memory_format=torch.preserve_format
            )
        return state

    def _sample_into(self, params, means, hessians, ess, wd) -> None:
        # per tensor, so that the noise never exists for all parameters at once (transient memory <= 1x)
        for p, m, h in zip(params, means, hessians, strict=True):
            z = torch.randn(p.shape, dtype=torch.float32, device=p.device, generator=self.noise(p.device))
            p.copy_((m.float() + z * torch.rsqrt(ess * (h + wd))).to(p.dtype))

    def _add_hessian_estimate(self, params, hessians, out, ess, wd) -> None:
        """out += g * eps / sigma, regenerating eps from the generator state saved before sampling."""
        for p, h, o in zip(params, hessians, out, strict=True):
            z = torch.randn(p.shape, dtype=torch.float32, device=p.device, generator=self.noise(p.device))
            g = p.grad.float() if p.grad is not None else torch.zeros_like(o)
            o.addcmul_(g, z * torch.sqrt(ess * (h + wd)))

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> Tensor | None:
        if closure is None:
            raise ValueError("IVON.step needs a closure running forward + backward and returning the loss")
        ess = self._lambda()
        impl = functional.resolve_impl(self.impl, [p for _, p in self._trainable()])
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if params:
                states = [self._state_of(group, p) for p in params]
                groups.append((group, params, states, [p.detach().clone() for p in params]))
        if impl == "triton":
            return self._step_fused(closure, ess, groups)
        samples = self.mc_samples
        # one sample: the gradient stays in p.grad and h_hat reuses the copy of m once m is back in place,
        # so a step needs one transient copy of the parameters; S > 1 needs sums of g and h_hat besides
        g_sums = (
            [[torch.zeros_like(p, dtype=torch.float32) for p in ps] for _, ps, _, _ in groups] if samples > 1 else None
        )
        h_hats = (
            [[torch.zeros_like(p, dtype=torch.float32) for p in ps] for _, ps, _, _ in groups] if samples > 1 else None
        )
        losses = []
        for _, params, _, _ in groups:  # create every device's generator now, so its state can be replayed
            for p in params:
                self.noise(p.device)
        for _ in range(samples):
            saved = self.noise.get_state()
            for group, params, states, means in groups:
                self._sample_into(params, means, [s["hess"] for s in states], ess, group["weight_decay"])
            try:
                loss = self._evaluate(closure)
            finally:
                for _, params, _, means in groups:
                    functional.restore(params, means, impl)
            if loss is None:
                return None
            losses.append(torch.as_tensor(loss).detach().float())
            after = self.noise.get_state()
            self.noise.set_state(saved)
            if h_hats is None:
                h_hats = [
                    [
                        m.float().zero_() if m.dtype == torch.float32 else torch.zeros_like(m, dtype=torch.float32)
                        for m in means
                    ]
                    for _, _, _, means in groups
                ]
            for i, (group, params, states, _) in enumerate(groups):
                self._add_hessian_estimate(params, [s["hess"] for s in states], h_hats[i], ess, group["weight_decay"])
                if g_sums is not None:
                    torch._foreach_add_(g_sums[i], [grad_or_zeros(p).float() for p in params])
            self.noise.set_state(after)
        self._descent_gradients(closure, groups, g_sums, h_hats, samples)
        for (group, params, states, _), out in zip(groups, h_hats, strict=True):
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1.0)
            functional.ivon_update(
                params,
                [p.grad for p in params],
                out,
                [s["momentum"] for s in states],
                [s["hess"] for s in states],
                self._scaled_lr(group),
                group["beta1"],
                group["beta2"],
                group["weight_decay"],
                int(steps[0].item()),
                group["clip_radius"],
                impl,
            )
        return torch.stack(losses).mean()

    def _step_fused(self, closure: Callable, ess: float, groups: list) -> Tensor | None:
        """The step with Triton kernels: the noise is Philox from one seed per sample, regenerated rather than
        stored. One sample and no integration hooks: sample, then one kernel for the whole descent (h_hat from
        the gradient and the seed, the mean read from its saved copy). Otherwise h_hat (and the gradient sum for
        several samples) is accumulated after each sample, so that hooks see it and DDP can average it."""
        ops = functional.fused_ops().ivon
        samples = self.mc_samples
        hooks = any(getattr(closure, name, None) is not None for name in ("sync", "descent_ready"))
        one_pass = samples == 1 and not hooks
        offsets, total = [], 0
        for _, params, _, _ in groups:
            offsets.append(total)
            total += sum(p.numel() for p in params)

        def zeros() -> list[list[Tensor]]:
            return [[torch.zeros_like(p, dtype=torch.float32) for p in ps] for _, ps, _, _ in groups]

        h_hats = None if one_pass else zeros()
        g_sums = zeros() if samples > 1 else None
        self.last_noise_seeds = []
        losses = []
        seed = 0
        for _ in range(samples):
            seed = self._philox_seed()
            for (group, params, states, means), offset in zip(groups, offsets, strict=True):
                ops.ivon_sample(params, means, [s["hess"] for s in states], ess, group["weight_decay"], seed, offset)
            try:
                loss = self._evaluate(closure)
            except BaseException:
                for _, params, _, means in groups:
                    functional.restore(params, means, "foreach")
                raise
            if loss is None:
                for _, params, _, means in groups:
                    functional.restore(params, means, "foreach")
                return None
            losses.append(torch.as_tensor(loss).detach().float())
            if one_pass:
                continue
            for i, ((group, params, states, means), offset) in enumerate(zip(groups, offsets, strict=True)):
                functional.restore(params, means, "foreach")
                ops.ivon_accumulate(
                    [grad_or_zeros(p) for p in params],
                    [s["hess"] for s in states],
                    h_hats[i],
                    ess,
                    group["weight_decay"],
                    seed,
                    offset,
                    g_sums[i] if g_sums is not None else None,
                )
        self._descent_gradients(closure, groups, g_sums, h_hats, samples)
        for i, ((group, params, states, means), offset) in enumerate(zip(groups, offsets, strict=True)):
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1.0)
            ops.ivon_update(
                params,
                [p.grad for p in params],
                [s["momentum"] for s in states],
                [s["hess"] for s in states],
                self._scaled_lr(group),
                group["beta1"],
                group["beta2"],
                group["weight_decay"],
                int(steps[0].item()),
                group["clip_radius"],
                h_hats=h_hats[i] if h_hats is not None else None,
                means=means if one_pass else None,
                ess=ess,
                seed=seed,
                offset=offset,
            )
        return torch.stack(losses).mean()

    def _descent_gradients(self, closure: Callable, groups: list, g_sums, h_hats, samples: int) -> None:
        """Average the Monte-Carlo sums into ``p.grad`` and ``h_hat`` (zeros for unused parameters), average them
        over data-parallel ranks (one collective), then let the integration clip / call its hooks."""
        sync_list = []
        for i, (_, params, _, _) in enumerate(groups):
            if g_sums is not None:
                torch._foreach_div_(h_hats[i], samples)
                torch._foreach_div_(g_sums[i], samples)
                for p, gs in zip(params, g_sums[i], strict=True):
                    p.grad = gs.to(p.dtype)
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            sync_list += [p.grad for p in params] + (h_hats[i] if h_hats is not None else [])
        self._sync(closure, sync_list)
        self._descent_ready(closure)

    def _scaled_lr(self, group: dict) -> float:
        return group["lr"] * ((group["hess_init"] + group["weight_decay"]) if self.rescale_lr else 1.0)

    # -------------------------------------------------------------------------------------------- posterior
    def posterior_std(self) -> list[Tensor]:
        ess = self._lambda()
        return [torch.rsqrt(ess * (self._state_of(g, p)["hess"] + g["weight_decay"])) for g, p in self._trainable()]
