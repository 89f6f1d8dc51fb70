"""bSAM: Bayesian sharpness-aware minimisation (Moellenhoff & Khan, "SAM as an Optimal Relaxation of Bayes",
ICLR 2023), written from the paper's equations.

A Gaussian posterior ``N(m, 1/(N s))`` with ``N = train_size * dafactor`` and ``delta = prior_precision / N``.
Per step, for each of M sub-batches k (m-sharpness, each with its own noise sample):

    theta_k = m + z_k / sqrt(N s),  z_k ~ N(0, I)       g_k = grad l_k(theta_k)
    e_k = rho g_k / s   (elementwise, no normalisation)   g_eps,k = grad l_k(m + e_k)
    h_k = sqrt(s) |g_k|

then, averaging over k:

    gbar <- b1 gbar + (1 - b1)(g_eps + delta m)
    m    <- m - lr gbar / s                              (the old s)
    s    <- b2 s + (1 - b2)(h + damping + delta)

Defaults (the paper's CIFAR recipe): lr 0.5, b1 0.9, b2 0.999, prior precision 40, rho 0.01, damping 0.1,
s_init 1, dafactor 4, 8 sub-batches. The parameters always hold the mean m between steps.
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


class BSAM(BayesianMixin, MultiPassOptimizer):
    """Bayesian SAM. ``train_size`` (N before ``dafactor``) is required before the first step; aipflow's
    Lightning integration fills it from the data module when left ``None``.

    With ``num_subbatches = M > 1`` the closure takes the sub-batch index: ``closure(k)`` must compute the loss
    on the k-th of M equal slices of the batch (aipflow's Lightning integration does this for you).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.5,
        train_size: int | None = None,
        dafactor: float = 4.0,
        rho: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        prior_precision: float = 40.0,
        damping: float = 0.1,
        s_init: float = 1.0,
        num_subbatches: int = 8,
        seed: int | None = None,
        impl: str = "auto",
    ) -> None:
        check_positive("lr", lr)
        check_positive("rho", rho)
        check_beta("beta1", beta1)
        check_beta("beta2", beta2)
        check_positive("prior_precision", prior_precision, allow_zero=True)
        check_positive("damping", damping, allow_zero=True)
        check_positive("s_init", s_init)
        check_positive("dafactor", dafactor)
        check_count("num_subbatches", num_subbatches, 1)
        if train_size is not None:
            check_positive("train_size", train_size)
        functional.check_impl(impl)
        defaults = dict(
            lr=lr, rho=rho, beta1=beta1, beta2=beta2, prior_precision=prior_precision, damping=damping, s_init=s_init
        )
        super().__init__(params, defaults)
        self.train_size = train_size
        self.dafactor = float(dafactor)
        self.num_subbatches = int(num_subbatches)
        self.impl = impl
        self._init_noise(seed)

    # ------------------------------------------------------------------------------------------------ state
    def _state_of(self, group: dict, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["momentum"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            state["precision"] = torch.full_like(
                p, group["s_init"], dtype=torch.float32, memory_format=torch.preserve_format
            )
        return state

    @property
    def effective_n(self) -> float:
        if self.train_size is None:
            raise ValueError(
                "bSAM needs train_size (N, the number of training examples) to set the posterior's scale; pass "
                "BSAM(..., train_size=N), or let aipflow's Lightning integration read it from the data module"
            )
        return float(self.train_size) * self.dafactor

    # ------------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> Tensor | None:
        if closure is None:
            raise ValueError("BSAM.step needs a closure running forward + backward (closure(k) for sub-batch k)")
        n = self.effective_n
        impl = functional.resolve_impl(self.impl, [p for _, p in self._trainable()])
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                continue
            states = [self._state_of(group, p) for p in params]
            groups.append(
                dict(
                    group=group,
                    params=params,
                    means=[p.detach().clone() for p in params],
                    precisions=[s["precision"] for s in states],
                    momenta=[s["momentum"] for s in states],
                    steps=[s["step"] for s in states],
                    g_sums=[torch.zeros_like(p, dtype=torch.float32) for p in params],
                    h_sums=[torch.zeros_like(p, dtype=torch.float32) for p in params],
                )
            )
        m_count = self.num_subbatches
        fused = impl == "triton"
        ops = functional.fused_ops() if fused else None
        self.last_noise_seeds = []
        losses = []
        for k in range(m_count):
            sub = k if m_count > 1 else None
            seed, offset = (self._philox_seed(), 0) if fused else (None, 0)
            for g in groups:
                if fused:
                    ops.bsam.bsam_noisy_point(g["params"], g["means"], g["precisions"], n, seed, offset)
                    offset += sum(p.numel() for p in g["params"])
                else:
                    functional.bsam_noisy_point(
                        g["params"], g["means"], g["precisions"], self._noise_like(g["params"]), n
                    )
            loss = self._evaluate_or_restore(closure, sub, groups)
            if loss is None:
                return None
            losses.append(loss.detach() if isinstance(loss, Tensor) else torch.tensor(float(loss)))
            for g in groups:
                grads = [grad_or_zeros(p) for p in g["params"]]
                if fused:
                    ops.bsam.bsam_perturbed_point(
                        g["params"], g["means"], grads, g["precisions"], g["h_sums"], g["group"]["rho"]
                    )
                else:
                    functional.bsam_perturbed_point(
                        g["params"], g["means"], grads, g["precisions"], g["h_sums"], g["group"]["rho"], impl
                    )
            if self._evaluate_or_restore(closure, sub, groups) is None:
                return None
            for g in groups:
                torch._foreach_add_(g["g_sums"], [grad_or_zeros(p).float() for p in g["params"]])
        # the Triton update reads the mean from the saved copy (restore fused in) unless a hook must see the
        # restored weights first (the Lightning integration's descent_ready)
        fuse_restore = fused and getattr(closure, "descent_ready", None) is None
        sync_list = []
        for g in groups:
            if not fuse_restore:
                functional.restore(g["params"], g["means"], impl)
            torch._foreach_div_(g["g_sums"], m_count)
            torch._foreach_div_(g["h_sums"], m_count)
            for p, gs in zip(g["params"], g["g_sums"], strict=True):
                p.grad = gs.to(p.dtype) if p.dtype != torch.float32 else gs  # the descent gradient, for clipping
            sync_list += [p.grad for p in g["params"]] + g["h_sums"]
        self._sync(closure, sync_list)
        self._descent_ready(closure)
        for g in groups:
            group = g["group"]
            torch._foreach_add_(g["steps"], 1.0)
            args = (
                g["params"],
                [p.grad for p in g["params"]],
                g["h_sums"],
                g["momenta"],
                g["precisions"],
                group["lr"],
                group["beta1"],
                group["beta2"],
                group["damping"],
                group["prior_precision"] / n,
            )
            if fused:
                ops.bsam.bsam_update(*args, means=g["means"] if fuse_restore else None)
            else:
                functional.bsam_update(*args, impl)
        return torch.stack(losses).float().mean()

    def _evaluate_or_restore(self, closure, sub, groups) -> Tensor | None:
        try:
            loss = self._evaluate(closure, sub)
        except BaseException:
            for g in groups:
                functional.restore(g["params"], g["means"], "reference")
            raise
        if loss is None:
            for g in groups:
                functional.restore(g["params"], g["means"], "reference")
        return loss

    def _noise_like(self, params: list[Tensor]) -> list[Tensor]:
        return functional.gaussian_like(params, self.noise)

    # -------------------------------------------------------------------------------------------- posterior
    def posterior_std(self) -> list[Tensor]:
        n = self.effective_n
        return [torch.rsqrt(n * self._state_of(g, p)["precision"]) for g, p in self._trainable()]
