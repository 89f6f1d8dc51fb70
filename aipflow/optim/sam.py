"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021) around any base optimizer.

Per step, with loss L and base optimizer B:

    g = grad L(w)
    e = rho g / ||g||                                  (SAM)
    e = rho T_w^2 g / ||T_w g||,  T_w = |w| + eta      (ASAM, elementwise)
    w <- B(w, grad L(w + e))

Defaults: SAM rho = 0.05 (the paper's CIFAR value); ASAM rho = 0.5, eta = 0.01 (ASAM paper, CIFAR).
The weights are restored from a saved copy (exact), never by subtracting e. A zero gradient gives e = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from aipflow.optim import functional
from aipflow.optim._base import (
    MultiPassOptimizer,
    OptionError,
    check_count,
    check_positive,
    is_distributed_tensor,
    local_part,
)


class SAM(MultiPassOptimizer):
    """Sharpness-aware minimisation wrapping ``base_optimizer``.

    Args:
        params: parameters or parameter groups (a group may set its own ``rho``/``adaptive``/``eta``).
        base_optimizer: a factory ``params -> Optimizer`` (in YAML: ``{class_path: torch.optim.SGD, init_args:
            {lr: 0.1, momentum: 0.9}}``); its param groups are shared, so LR schedulers act on them.
        rho: neighbourhood radius (> 0).
        adaptive: ASAM's scale-invariant neighbourhood.
        eta: ASAM's offset in ``T_w = |w| + eta`` (>= 0).
        interval: sharpness-aware step every ``interval`` steps, a plain base step otherwise (a cost knob).
        max_grad_norm: clip the descent gradient (the one at ``w + e``) to this global norm before the base step;
            with ``impl="triton"`` the clipping happens inside the fused update.
        impl: ``"auto" | "foreach" | "reference" | "triton"``. With ``"triton"`` (auto on CUDA) the norm and the
            perturbation are fused kernels, and a ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` base step runs as one
            fused kernel per dtype group that also restores in-place-perturbed weights; other base optimizers take
            their own step.
        base_options: the base optimizer's own options as keywords, davda54/sam's call shape:
            ``SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)`` is
            ``SAM(model.parameters(), functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), rho=0.05)``.

    ``step(closure)`` calls the closure itself (no gradients need exist before). For hand-written loops:
    ``loss.backward(); opt.first_step(zero_grad=True); loss_fn().backward(); opt.second_step(zero_grad=True)``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        base_optimizer: Callable[[Iterable], Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        interval: int = 1,
        max_grad_norm: float | None = None,
        impl: str = "auto",
        **base_options: Any,
    ) -> None:
        check_positive("rho", rho)
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        check_positive("eta", eta, allow_zero=True)
        check_count("interval", interval, 1)
        functional.check_impl(impl)
        if isinstance(base_optimizer, Optimizer) or not callable(base_optimizer):
            raise OptionError(
                "base_optimizer",
                base_optimizer,
                "be an optimizer class or factory taking the parameters (e.g. torch.optim.SGD or "
                "functools.partial(torch.optim.SGD, lr=0.1))",
            )
        super().__init__(list(params), dict(rho=rho, adaptive=adaptive, eta=eta))
        base = base_optimizer(self.param_groups, **base_options)
        if not isinstance(base, Optimizer):
            raise OptionError("base_optimizer", base_optimizer, "build a torch.optim.Optimizer")
        if isinstance(base, MultiPassOptimizer):
            raise OptionError("base_optimizer", base_optimizer, "build a single-pass optimizer, not a multi-pass one")
        self.base_optimizer = base
        self.param_groups = base.param_groups  # one set of groups: schedulers and Lightning see the same lr
        self.state = base.state
        self.interval = int(interval)
        self.max_grad_norm = max_grad_norm
        self.impl = impl
        self.steps = 0
        self._backups: dict[Tensor, Tensor] = {}  # one buffer per parameter (w + e, or a copy of w); not checkpointed
        self._sum_over_shards: Callable[[Tensor], None] | None = None
        self._perturbed: list[tuple[str, list[Tensor], list[Tensor]]] = []

    def _resolved_impl(self) -> str:
        return functional.resolve_impl(self.impl, [local_part(p) for g in self.param_groups for p in g["params"]])

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> Tensor:
        """Move to ``w + e`` using the current gradients; returns the global gradient norm used.

        The norm is the whole model's (Foret et al.: g is the gradient of all the weights), one over every
        parameter group; a group's own ``rho`` / ``adaptive`` / ``eta`` apply to its part of e and of the norm.
        Groups that share ``adaptive`` and ``eta`` are normed in one call (one launch with Triton).

        Parameters that own their storage are moved out of place (``w + e`` written into a kept buffer that the
        parameter then points to; the original is untouched and pointed to again on restore); views such as
        FSDP's flat-parameter shards are moved in place after saving a copy into that buffer. Either way the
        restore is exact, and the one buffer per parameter is the only memory SAM keeps (1x).
        """
        if self._perturbed:
            raise RuntimeError("SAM.first_step called twice without second_step (the weights are still perturbed)")
        impl = self._resolved_impl()
        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        groups = [(g, params) for g, params in groups if params]
        if not groups:
            if zero_grad:
                self.zero_grad()
            return torch.zeros(())
        # DTensor parameters (FSDP2): e is computed and written on each rank's own part, in place
        groups = [(g, [local_part(p) for p in params], [local_part(p.grad) for p in params]) for g, params in groups]
        squared_norm = self._global_squared_norm(groups, impl)
        norm = squared_norm.sqrt()
        for group, params, grads in groups:
            rho, adaptive, eta = group["rho"], group["adaptive"], group["eta"]
            buffers = [self._backup_for(p) for p in params]
            if self._sum_over_shards is None and all(functional.owns_storage(p) for p in params):
                _, originals = functional.sam_perturb_swap(
                    params, grads, buffers, rho, adaptive, eta, impl, squared_norm
                )
                self._perturbed.append(("swap", params, originals))
            else:
                functional.sam_perturb(params, grads, buffers, rho, adaptive, eta, impl, squared_norm)
                self._perturbed.append(("copy", params, buffers))
        if zero_grad:
            self.zero_grad()
        return norm

    def set_sharded(self, all_reduce_sum: Callable[[Tensor], None] | None) -> None:
        """The parameters are shards of the model (FSDP, FSDP2): the squared gradient norm of the local shards is
        summed over the shards by ``all_reduce_sum`` (in place; e.g. ``torch.distributed.all_reduce``), one
        collective of one number per step, so that e uses the whole model's norm; and the perturbation is written
        in place (the sharding wrapper owns the parameters' storage: with Lightning's FSDP, use_orig_params, pointing
        a parameter at another buffer left FSDP computing the second pass at the unperturbed weights, 0.018 off
        the global-batch step; in place, 3e-8). aipflow's Lightning integration sets it for ``FSDPStrategy`` and
        ``ModelParallelStrategy``; ``None`` turns it off."""
        self._sum_over_shards = all_reduce_sum

    def _global_squared_norm(self, groups: list[tuple[dict, list[Tensor], list[Tensor]]], impl: str) -> Tensor:
        squared = self._local_squared_norm(groups, impl)
        if self._sum_over_shards is not None:
            squared = squared.clone()
            self._sum_over_shards(squared)
        return squared

    @staticmethod
    def _local_squared_norm(groups: list[tuple[dict, list[Tensor], list[Tensor]]], impl: str) -> Tensor:
        by_scaling: dict[tuple[bool, float], tuple[list[Tensor], list[Tensor]]] = {}
        for group, params, grads in groups:
            key = (bool(group["adaptive"]), float(group["eta"]) if group["adaptive"] else 0.0)
            ps, gs = by_scaling.setdefault(key, ([], []))
            ps.extend(params)
            gs.extend(grads)
        parts = [
            functional.sam_squared_norm(params, grads, adaptive, eta, impl)
            for (adaptive, eta), (params, grads) in by_scaling.items()
        ]
        if len(parts) == 1:
            return parts[0]
        device = parts[0].device
        return torch.stack([part.to(device) for part in parts]).sum()

    def _backup_for(self, p: Tensor) -> Tensor:
        # keyed by the parameter object; while swapped, p.data is the buffer itself, so compare with p's shape
        buf = self._backups.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = self._backups[p] = torch.empty_like(p, memory_format=torch.preserve_format)
        return buf

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights as they were before ``first_step`` (exact); a no-op when not perturbed."""
        impl = self._resolved_impl()
        for mode, params, saved in self._perturbed:
            if mode == "swap":
                functional.swap_back(params, saved)
            else:
                functional.restore(params, saved, impl)
        self._perturbed.clear()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and take the base step with the gradients at ``w + e``."""
        impl = self._resolved_impl()
        if impl == "triton" and functional.base_step_fusable(self.base_optimizer) and not self._distributed_tensors():
            functional.fused_base_step(self.base_optimizer, self._restore_for_fused_step(), self.max_grad_norm)
        else:
            self.restore()
            self._base_step(impl)
        if zero_grad:
            self.zero_grad()

    def _restore_for_fused_step(self) -> dict[Tensor, Tensor]:
        """Undo the perturbation, except where the fused update will read the saved weights itself: swapped
        parameters point at their originals again; in-place ones with a gradient are returned with their backups;
        those without a gradient (no update) are copied back now."""
        backups = {}
        for mode, params, saved in self._perturbed:
            if mode == "swap":
                functional.swap_back(params, saved)
                continue
            for p, b in zip(params, saved, strict=True):
                if p.grad is not None:
                    backups[p] = b
                else:
                    p.copy_(b)
        self._perturbed.clear()
        return backups

    def _distributed_tensors(self) -> bool:
        return any(is_distributed_tensor(p) for g in self.param_groups for p in g["params"])

    def _base_step(self, impl: str) -> None:
        fusable = impl == "triton" and not self._distributed_tensors()
        if fusable and functional.fused_base_step(self.base_optimizer, None, self.max_grad_norm):
            return
        if self.max_grad_norm is not None:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm, foreach=impl != "reference")
        self.base_optimizer.step()

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> Tensor | None:
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs a closure that runs forward + backward and returns the loss "
                "(opt.step(closure)); or call first_step() and second_step() around your own second backward"
            )
        self.steps += 1
        loss = self._evaluate(closure)
        if loss is None and getattr(closure, "found_inf", False):
            return None
        if (self.steps - 1) % self.interval != 0:
            self._descent_ready(closure)
            self._base_step(self._resolved_impl())
            return loss
        self.first_step()
        try:
            second = self._evaluate(closure)
        except BaseException:
            self.restore()
            raise
        if second is None:  # non-finite gradients at w + e: skip the step, weights exactly as before
            self.restore()
            return None
        self._descent_ready(closure)
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """The base optimizer's state dict, in torch's layout (``state`` + ``param_groups``, so that FSDP and DCP can
        reshard it), with SAM's step count in each group (``sam_steps``). No backup: SAM is never saved perturbed."""
        state_dict = self.base_optimizer.state_dict()
        state_dict["param_groups"] = [{**group, "sam_steps": self.steps} for group in state_dict["param_groups"]]
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        if "base_optimizer" in state_dict:  # the layout of aipflow <= 0.1.0's checkpoints
            base, steps = state_dict["base_optimizer"], int(state_dict["sam"]["steps"])
        elif "param_groups" in state_dict:
            groups = [dict(group) for group in state_dict["param_groups"]]
            if groups and "sam_steps" not in groups[0]:  # a plain optimizer's state: resuming SAM from it is a mix-up
                raise KeyError(f"{type(self).__name__}.load_state_dict: this state was saved by another optimizer")
            steps = int(groups[0]["sam_steps"]) if groups else 0
            for group in groups:
                group.pop("sam_steps", None)
            base = {**state_dict, "param_groups": groups}
        else:
            raise KeyError(f"{type(self).__name__}.load_state_dict expects a state dict with state and param_groups")
        self.base_optimizer.load_state_dict(base)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.steps = steps
        self._perturbed.clear()

    def __repr__(self) -> str:
        g = self.param_groups[0] if self.param_groups else {}
        return (
            f"{type(self).__name__}(rho={g.get('rho')}, adaptive={g.get('adaptive')}, eta={g.get('eta')}, "
            f"interval={self.interval}, base={type(self.base_optimizer).__name__})"
        )


class ASAM(SAM):
    """ASAM: SAM with ``adaptive=True``; defaults rho = 0.5, eta = 0.01 (Kwon et al., ICML 2021, CIFAR)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        base_optimizer: Callable[[Iterable], Optimizer],
        rho: float = 0.5,
        eta: float = 0.01,
        interval: int = 1,
        max_grad_norm: float | None = None,
        impl: str = "auto",
        **base_options: Any,
    ) -> None:
        super().__init__(
            params,
            base_optimizer,
            rho=rho,
            adaptive=True,
            eta=eta,
            interval=interval,
            max_grad_norm=max_grad_norm,
            impl=impl,
            **base_options,
        )
