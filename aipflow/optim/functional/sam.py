"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021) over lists of tensors: the global norm, the
perturbation ``w + e`` (in place with a backup, or out of place by swapping storage), and the base optimizer's step
fused with the restore (Triton, for ``torch.optim.SGD`` / ``Adam`` / ``AdamW``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aipflow.optim.functional._backend import groups

__all__ = [
    "base_step_fusable",
    "fused_base_step",
    "owns_storage",
    "sam_perturb",
    "sam_perturb_swap",
    "sam_scale_norm",
    "sam_squared_norm",
    "swap_back",
]


def sam_squared_norm(
    params: Sequence[Tensor], grads: Sequence[Tensor], adaptive: bool, eta: float, impl: str = "foreach"
) -> Tensor:
    """``||g||^2`` (SAM) or ``||T_w g||^2`` with ``T_w = |w| + eta`` (ASAM), a 0-dim fp32 tensor on the gradients'
    device. Squares, not norms, so that several parameter groups add up to one global norm."""
    if not grads:
        return torch.zeros(())
    device = grads[0].device
    if impl == "triton":
        from aipflow.kernels.norm import sum_of_squares

        return sum_of_squares(grads, params, adaptive, eta).reshape(())
    if impl == "reference":
        total = torch.zeros((), dtype=torch.float32, device=device)
        for p, g in zip(params, grads, strict=True):
            g32 = g.float()
            if adaptive:
                g32 = (p.float().abs() + eta) * g32
            total = total + g32.pow(2).sum().to(device)
        return total
    squares = []
    for ps, gs in groups(params, grads):
        if adaptive:
            scaled = torch._foreach_abs(ps)
            torch._foreach_add_(scaled, eta)
            torch._foreach_mul_(scaled, gs)
            norms = torch._foreach_norm(scaled, 2, dtype=torch.float32)
        else:
            norms = torch._foreach_norm(gs, 2, dtype=torch.float32)
        squares.append(torch.stack(norms).pow(2).sum().to(device))
    return torch.stack(squares).sum()


def sam_scale_norm(
    params: Sequence[Tensor], grads: Sequence[Tensor], adaptive: bool, eta: float, impl: str = "foreach"
) -> Tensor:
    """SAM: ``||g||_2``; ASAM: ``||T_w g||_2`` with ``T_w = |w| + eta`` (Kwon et al. 2021, eq. 9), in fp32."""
    return sam_squared_norm(params, grads, adaptive, eta, impl).sqrt()


def _sam_scale(rho: float, squared_norm: Tensor) -> Tensor:
    # where instead of a branch: no host sync on the norm; a zero norm gives e = 0
    norm = squared_norm.reshape(()).sqrt()
    return torch.where(norm > 0, rho / norm.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(norm))


def sam_perturb(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    backups: Sequence[Tensor],
    rho: float,
    adaptive: bool,
    eta: float,
    impl: str = "foreach",
    squared_norm: Tensor | None = None,
) -> Tensor:
    """Save ``w`` into ``backups`` and move to ``w + e``: ``e = rho g / ||g||`` (SAM) or
    ``e = rho T_w^2 g / ||T_w g||`` (ASAM). A zero norm gives ``e = 0`` (no NaN). ``squared_norm``: the norm's
    square over the whole model (several parameter groups: Foret et al.'s g is the whole model's gradient);
    computed from these lists when omitted. Returns the squared norm used (a 0-dim fp32 tensor)."""
    if squared_norm is None:
        squared_norm = sam_squared_norm(params, grads, adaptive, eta, impl)
    if impl == "triton":
        from aipflow.kernels.sam import sam_perturb as fused

        return fused(params, grads, backups, rho, adaptive, eta, mode="copy", squared_norm=squared_norm)
    scale = _sam_scale(rho, squared_norm)
    if impl == "reference":
        for p, g, b in zip(params, grads, backups, strict=True):
            b.copy_(p)
            e = g.float() * scale.to(p.device)
            if adaptive:
                e = e * (p.float().abs() + eta).pow(2)
            p.add_(e.to(p.dtype))
        return squared_norm.reshape(())
    for ps, gs, bs in groups(params, grads, backups):
        torch._foreach_copy_(bs, ps)
        s = scale.to(ps[0].device)
        if ps[0].dtype == torch.float32:
            if adaptive:
                t = torch._foreach_abs(ps)
                torch._foreach_add_(t, eta)
                torch._foreach_mul_(t, t)
                torch._foreach_mul_(t, gs)
                torch._foreach_mul_(t, s)
                torch._foreach_add_(ps, t)
            elif s.device.type == "cpu":
                # a scalar alpha fuses the scaling into the add: no temporary, 12 bytes/param instead of 20
                torch._foreach_add_(ps, gs, alpha=float(s))
            else:  # keep the norm on the device: no host sync
                torch._foreach_add_(ps, torch._foreach_mul(gs, s))
        else:  # low precision: compute e in fp32, add once
            g32 = [g.float() for g in gs]
            if adaptive:
                t = [(p.float().abs() + eta).pow_(2) for p in ps]
                torch._foreach_mul_(g32, t)
            torch._foreach_mul_(g32, s)
            torch._foreach_add_(ps, [e.to(p.dtype) for e, p in zip(g32, ps, strict=True)])
    return squared_norm.reshape(())


def owns_storage(p: Tensor) -> bool:
    """True when ``p.data`` may be swapped for another tensor: a plain tensor that is not a view (FSDP's flat-
    parameter views and DTensors are not, and take the copy path)."""
    return type(p.data) is torch.Tensor and p._base is None and p.layout == torch.strided


def sam_perturb_swap(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    buffers: Sequence[Tensor],
    rho: float,
    adaptive: bool,
    eta: float,
    impl: str = "foreach",
    squared_norm: Tensor | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Like :func:`sam_perturb`, but out of place: ``w + e`` is written into ``buffers`` and the parameters are
    pointed at them; the untouched originals are returned for :func:`swap_back`. A third less memory traffic
    than copy-then-perturb-then-copy-back (read w and g, write w + e: 12 bytes per fp32 parameter plus the norm;
    the restore moves nothing) and exact by construction (w is never written). Returns the squared norm used
    and the originals."""
    if squared_norm is None:
        squared_norm = sam_squared_norm(params, grads, adaptive, eta, impl)
    if impl == "triton":
        from aipflow.kernels.sam import sam_perturb as fused

        fused(params, grads, buffers, rho, adaptive, eta, mode="swap", squared_norm=squared_norm)
        originals = [p.data for p in params]
        for p, buf in zip(params, buffers, strict=True):
            p.data = buf
        return squared_norm.reshape(()), originals
    scale = _sam_scale(rho, squared_norm)
    originals = [p.data for p in params]
    simple = not adaptive and scale.device.type == "cpu" and impl != "reference"
    alpha = float(scale) if simple else None
    for p, g, buf in zip(params, grads, buffers, strict=True):
        w = p.data
        if alpha is not None and w.dtype == torch.float32:
            torch.add(w, g, alpha=alpha, out=buf)  # one pass: read w, g; write w + e
        else:
            e = g.float() * scale.to(w.device)
            if adaptive:
                e.mul_((w.float().abs() + eta).pow_(2))
            torch.add(w.float(), e, out=e)
            buf.copy_(e)  # one rounding to the parameter dtype
        p.data = buf
    return squared_norm.reshape(()), originals


def swap_back(params: Sequence[Tensor], originals: Sequence[Tensor]) -> None:
    """Point the parameters at their original storage again (exact, no copy)."""
    for p, original in zip(params, originals, strict=True):
        p.data = original


# ------------------------------------------------------------------------------------ fused base-optimizer step
def fused_base_step(
    optimizer: torch.optim.Optimizer,
    backups: dict[Tensor, Tensor] | None = None,
    max_grad_norm: float | None = None,
) -> bool:
    """Take ``optimizer``'s step with aipflow's Triton kernels when it is a ``torch.optim.SGD``, ``Adam`` or
    ``AdamW`` whose options they cover (no amsgrad, no tensor lr, not differentiable/capturable/fused), writing the
    same state torch would (its state dict stays loadable by torch). ``backups``: parameters whose weights are to
    be read from a saved copy (SAM's restore fused into the update). ``max_grad_norm``: global-norm clipping over
    all the optimizer's gradients, inside the update. Returns ``False``, having touched nothing, when not covered."""
    if not base_step_fusable(optimizer):
        return False
    from aipflow.kernels import descent

    backups = backups or {}
    clip = None
    if max_grad_norm is not None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        clip = descent.clip_coefficient(grads, max_grad_norm) if grads else None
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        for key, chunk, saved in _fused_buckets(optimizer, group, params, backups):
            grads = [p.grad for p in chunk]
            state = [optimizer.state[p] for p in chunk]
            if isinstance(optimizer, torch.optim.SGD):
                momentum = group["momentum"]
                descent.sgd_step(
                    chunk,
                    grads,
                    [s["momentum_buffer"] for s in state] if momentum != 0 else None,
                    lr=group["lr"],
                    momentum=momentum,
                    dampening=group["dampening"],
                    weight_decay=group["weight_decay"],
                    nesterov=group["nesterov"],
                    maximize=group.get("maximize", False),
                    first=key,
                    backups=saved,
                    clip_coef=clip,
                )
            else:
                beta1, beta2 = group["betas"]
                descent.adam_step(
                    chunk,
                    grads,
                    [s["exp_avg"] for s in state],
                    [s["exp_avg_sq"] for s in state],
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    decoupled=_decoupled(optimizer, group),
                    maximize=group.get("maximize", False),
                    step=key,  # for Adam the bucket key is the step count
                    backups=saved,
                    clip_coef=clip,
                )
    return True


def _decoupled(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    return isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay", False))


def base_step_fusable(optimizer: torch.optim.Optimizer) -> bool:
    """Whether :func:`fused_base_step` covers this optimizer and its options."""
    if type(optimizer) not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        return False
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor) or any(group.get(k) for k in ("differentiable", "capturable", "fused")):
            return False
        if group.get("amsgrad"):
            return False
    return True


def _fused_buckets(optimizer, group, params, backups):
    """Yield ``(key, params, backups or None)`` launches: for SGD the key says whether the momentum buffers are new
    (torch sets them to the first gradient); for Adam it is the step count after this step. Initialises state the
    way torch does."""
    buckets: dict[object, list[Tensor]] = {}
    for p in params:
        state = optimizer.state[p]
        if isinstance(optimizer, torch.optim.SGD):
            key = group["momentum"] != 0 and state.get("momentum_buffer") is None
            if key:
                state["momentum_buffer"] = torch.empty_like(p, memory_format=torch.preserve_format)
        else:
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1  # a CPU scalar, as in torch's default Adam: no device sync
            key = int(state["step"])
        buckets.setdefault(key, []).append(p)
    for key, ps in buckets.items():
        restored = [p for p in ps if p in backups]
        in_place = [p for p in ps if p not in backups]
        if in_place:
            yield key, in_place, None
        if restored:
            yield key, restored, [backups[p] for p in restored]
