"""Step functions over lists of tensors: the one seam between the optimizers and their backends.

Each public function takes plain lists (parameters, gradients, state buffers) and an ``impl``:

- ``"reference"``: a per-tensor loop written to read like the paper's equations;
- ``"foreach"``: the same arithmetic with ``torch._foreach_*`` (one kernel per op over all tensors; default);
- ``"triton"``: fused kernels (``aipflow.kernels``), where available.

Both backends compute in the parameters' dtype for fp32 and in fp32 for fp16/bf16 state-free updates; the
restore of a perturbation always copies the saved weights back (exact), it never subtracts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

IMPLS = ("auto", "foreach", "reference", "triton")


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def resolve_impl(impl: str, params: Sequence[Tensor]) -> str:
    """``auto`` -> Triton on CUDA when its kernels can take these parameters, else foreach. An explicit ``triton``
    that cannot run is an error naming the reason, never a silent fallback."""
    check_impl(impl)
    if impl == "auto":
        on_cuda = any(p.is_cuda for p in params)
        return "triton" if on_cuda and _triton_blocker(params) is None else "foreach"
    if impl == "triton":
        reason = _triton_blocker(params)
        if reason is not None:
            raise RuntimeError(
                f"impl='triton' was asked for but aipflow's Triton kernels cannot run here: {reason}; "
                "use impl='foreach' or 'auto'"
            )
    return impl


def triton_available() -> bool:
    try:
        from aipflow.kernels import available
    except ImportError:
        return False
    return available()


def fused_ops():
    """``aipflow.kernels`` with its op modules loaded: the optimizers reach the Triton kernels only through here."""
    import aipflow.kernels.bsam
    import aipflow.kernels.descent
    import aipflow.kernels.ivon
    import aipflow.kernels.langevin
    import aipflow.kernels.sam  # noqa: F401

    return aipflow.kernels


def _triton_blocker(params: Sequence[Tensor]) -> str | None:
    try:
        from aipflow.kernels import can_run_on
    except ImportError:
        return "aipflow.kernels cannot be imported"
    return can_run_on(params)


def _groups(*lists: Sequence[Tensor]) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists by (device, dtype) of the first list: foreach ops need one device and dtype."""
    buckets: dict[tuple, list[list[Tensor]]] = defaultdict(lambda: [[] for _ in lists])
    for items in zip(*lists, strict=True):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(buckets[key], items, strict=True):
            bucket.append(item)
    return [tuple(b) for b in buckets.values()]


# ----------------------------------------------------------------------------------------------- SAM / ASAM
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
    for ps, gs in _groups(params, grads):
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
    for ps, gs, bs in _groups(params, grads, backups):
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


def restore(params: Sequence[Tensor], backups: Sequence[Tensor], impl: str = "foreach") -> None:
    """Copy the saved weights back: exact, whatever the dtype."""
    if impl == "reference":
        for p, b in zip(params, backups, strict=True):
            p.copy_(b)
        return
    for ps, bs in _groups(params, backups):  # triton too: a plain copy is already one pass
        torch._foreach_copy_(ps, bs)


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


# ------------------------------------------------------------------------------------------------------ noise
def gaussian_like(tensors: Sequence[Tensor], generator_for) -> list[Tensor]:
    """Standard normal noise shaped like each tensor, drawn in order from ``generator_for(device)``."""
    return [
        torch.randn(t.shape, dtype=torch.float32, device=t.device, generator=generator_for(t.device)) for t in tensors
    ]


# ------------------------------------------------------------------------------------------------------- bSAM
def bsam_noisy_point(
    params: Sequence[Tensor], means: Sequence[Tensor], precisions: Sequence[Tensor], noise: Sequence[Tensor], n: float
) -> None:
    """``theta = m + z / sqrt(N s)`` (Moellenhoff & Khan 2023, the posterior sample of bSAM)."""
    for p, m, s, z in zip(params, means, precisions, noise, strict=True):
        p.copy_((m.float() + z * torch.rsqrt(n * s)).to(p.dtype))


def bsam_perturbed_point(
    params: Sequence[Tensor],
    means: Sequence[Tensor],
    grads: Sequence[Tensor],
    precisions: Sequence[Tensor],
    h_sums: Sequence[Tensor],
    rho: float,
    impl: str = "foreach",
) -> None:
    """``theta = m + rho g / s`` (elementwise, no normalisation) and ``h_sum += sqrt(s) |g|``."""
    if impl == "reference":
        for p, m, g, s, hs in zip(params, means, grads, precisions, h_sums, strict=True):
            g32 = g.float()
            hs.add_(s.sqrt() * g32.abs())
            p.copy_((m.float() + rho * g32 / s).to(p.dtype))
        return
    for ps, ms, gs, ss, hss in _groups(params, means, grads, precisions, h_sums):
        g32 = [g.float() for g in gs] if gs[0].dtype != torch.float32 else list(gs)
        abs_g = torch._foreach_abs(g32)
        torch._foreach_addcmul_(hss, torch._foreach_sqrt(ss), abs_g)
        eps = torch._foreach_div(g32, ss)
        torch._foreach_mul_(eps, rho)
        if ps[0].dtype == torch.float32:
            torch._foreach_add_(eps, ms)
            torch._foreach_copy_(ps, eps)
        else:
            torch._foreach_add_(eps, [m.float() for m in ms])
            torch._foreach_copy_(ps, eps)


def bsam_update(
    params: Sequence[Tensor],
    grad_means: Sequence[Tensor],
    h_means: Sequence[Tensor],
    momenta: Sequence[Tensor],
    precisions: Sequence[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    damping: float,
    delta: float,
    impl: str = "foreach",
) -> None:
    """bSAM's descent (params hold the mean m):

    ``gbar <- b1 gbar + (1-b1)(g_eps + delta m)``; ``m <- m - lr gbar / s`` (old s);
    ``s <- b2 s + (1-b2)(h + damping + delta)``.
    """
    if impl == "reference":
        for m, g, h, gbar, s in zip(params, grad_means, h_means, momenta, precisions, strict=True):
            m32 = m.float()
            gbar.mul_(beta1).add_((1 - beta1) * (g.float() + delta * m32))
            m.copy_((m32 - lr * gbar / s).to(m.dtype))
            s.mul_(beta2).add_((1 - beta2) * (h + damping + delta))
        return
    for ms, gs, hs, gbars, ss in _groups(params, grad_means, h_means, momenta, precisions):
        m32 = [m.float() for m in ms] if ms[0].dtype != torch.float32 else list(ms)
        g32 = [g.float() for g in gs] if gs[0].dtype != torch.float32 else list(gs)
        d = torch._foreach_mul(m32, delta)
        torch._foreach_add_(d, g32)
        torch._foreach_lerp_(gbars, d, 1 - beta1)  # b1 gbar + (1 - b1) d
        step = torch._foreach_div(gbars, ss)
        if ms[0].dtype == torch.float32:
            torch._foreach_add_(ms, step, alpha=-lr)
        else:
            torch._foreach_add_(m32, step, alpha=-lr)
            torch._foreach_copy_(ms, m32)
        target = torch._foreach_add(hs, damping + delta)
        torch._foreach_lerp_(ss, target, 1 - beta2)


# ------------------------------------------------------------------------------------------------------- IVON
def ivon_update(
    params: Sequence[Tensor],
    g_hats: Sequence[Tensor],
    h_hats: Sequence[Tensor],
    momenta: Sequence[Tensor],
    hessians: Sequence[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    step: int,
    clip_radius: float,
    impl: str = "foreach",
) -> None:
    """IVON's update (Shen et al. 2024, Alg. 1), params holding the mean m:

    ``g <- b1 g + (1-b1) g_hat``;
    ``h <- b2 h + (1-b2) h_hat + 0.5 (1-b2)^2 (h - h_hat)^2 / (h + delta)``;
    ``m <- m - lr clip((g / (1 - b1^t) + delta m) / (h + delta), clip_radius)``.
    """
    debias = 1 - beta1**step
    if impl == "reference":
        for m, gh, hh, g, h in zip(params, g_hats, h_hats, momenta, hessians, strict=True):
            g.mul_(beta1).add_((1 - beta1) * gh)
            h.copy_(beta2 * h + (1 - beta2) * hh + 0.5 * (1 - beta2) ** 2 * (h - hh) ** 2 / (h + weight_decay))
            m32 = m.float()
            upd = (g / debias + weight_decay * m32) / (h + weight_decay)
            if clip_radius != float("inf"):
                upd = upd.clamp(-clip_radius, clip_radius)
            m.copy_((m32 - lr * upd).to(m.dtype))
        return
    for ms, ghs, hhs, gs, hs in _groups(params, g_hats, h_hats, momenta, hessians):
        ghs = [g.float() for g in ghs] if ghs[0].dtype != torch.float32 else ghs
        torch._foreach_lerp_(gs, ghs, 1 - beta1)
        diff = torch._foreach_sub(hs, hhs)
        torch._foreach_mul_(diff, diff)
        denom = torch._foreach_add(hs, weight_decay)
        torch._foreach_div_(diff, denom)
        torch._foreach_lerp_(hs, hhs, 1 - beta2)
        torch._foreach_add_(hs, diff, alpha=0.5 * (1 - beta2) ** 2)
        m32 = [m.float() for m in ms] if ms[0].dtype != torch.float32 else list(ms)
        upd = torch._foreach_mul(m32, weight_decay)
        torch._foreach_add_(upd, gs, alpha=1 / debias)
        torch._foreach_div_(upd, torch._foreach_add(hs, weight_decay))
        if clip_radius != float("inf"):
            torch._foreach_clamp_min_(upd, -clip_radius)
            torch._foreach_clamp_max_(upd, clip_radius)
        if ms[0].dtype == torch.float32:
            torch._foreach_add_(ms, upd, alpha=-lr)
        else:
            torch._foreach_add_(m32, upd, alpha=-lr)
            torch._foreach_copy_(ms, m32)


def langevin_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    noises: Sequence[Tensor] | tuple[int, int],
    square_avgs: Sequence[Tensor] | None,
    lr: float,
    weight_decay: float,
    noise_variance: float,
    alpha: float = 0.99,
    eps: float = 1e-5,
    impl: str = "foreach",
) -> None:
    """One Euler-Maruyama step of (preconditioned) Langevin dynamics, in float32 for low-precision parameters:

    SGLD (Welling & Teh 2011): ``theta <- theta - lr (g + wd theta) + sqrt(noise_variance) z``;
    pSGLD (Li et al. 2016), when ``square_avgs`` is given: ``V <- alpha V + (1 - alpha) g^2``,
    ``P = 1 / (eps + sqrt(V))``, ``theta <- theta - lr P (g + wd theta) + sqrt(noise_variance P) z``;

    with ``noise_variance = 2 lr T / N`` (the optimizers compute it) and ``z`` standard normal: ``noises`` (one
    tensor per parameter), or for ``impl="triton"`` a Philox ``(seed, offset)`` from which the kernel draws it.
    """
    if impl == "triton":
        seed, offset = noises
        fused_ops().langevin.langevin_step(
            params, grads, square_avgs, lr, weight_decay, noise_variance, seed, offset, alpha, eps
        )
        return
    if impl == "reference":
        for theta, g, z, i in zip(params, grads, noises, range(len(params)), strict=True):
            dtype = _compute_dtype(theta)
            t, g, z = theta.to(dtype), g.to(dtype), z.to(dtype)
            drift = g + weight_decay * t
            if square_avgs is None:
                new = t - lr * drift + noise_variance**0.5 * z
            else:
                v = square_avgs[i]
                v.copy_(alpha * v + (1 - alpha) * g * g)
                precondition = 1.0 / (eps + v.to(dtype).sqrt())
                new = t - lr * precondition * drift + (noise_variance * precondition).sqrt() * z
            theta.copy_(new.to(theta.dtype))
        return
    lists = (params, grads, noises) if square_avgs is None else (params, grads, noises, square_avgs)
    for bucket in _groups(*lists):
        ps, gs, zs = bucket[:3]
        dtype = _compute_dtype(ps[0])
        ts = [p.to(dtype) for p in ps] if ps[0].dtype != dtype else list(ps)
        drift = [g.to(dtype) for g in gs] if gs[0].dtype != dtype else [g.clone() for g in gs]
        zs = [z.to(dtype) for z in zs] if zs[0].dtype != dtype else list(zs)
        if square_avgs is None:
            torch._foreach_add_(drift, ts, alpha=weight_decay)
            torch._foreach_mul_(drift, -lr)
            torch._foreach_add_(drift, zs, alpha=noise_variance**0.5)
        else:
            vs = bucket[3]
            torch._foreach_mul_(vs, alpha)
            torch._foreach_addcmul_(vs, drift, drift, value=1 - alpha)
            precondition = torch._foreach_sqrt([v.to(dtype) for v in vs] if vs[0].dtype != dtype else vs)
            torch._foreach_add_(precondition, eps)
            torch._foreach_reciprocal_(precondition)
            torch._foreach_add_(drift, ts, alpha=weight_decay)
            torch._foreach_mul_(drift, precondition)
            torch._foreach_mul_(drift, -lr)
            torch._foreach_mul_(precondition, noise_variance)
            torch._foreach_sqrt_(precondition)
            torch._foreach_addcmul_(drift, precondition, zs)
        torch._foreach_add_(ts, drift)
        if ps[0].dtype != dtype:
            torch._foreach_copy_(ps, ts)


def _compute_dtype(t: Tensor) -> torch.dtype:
    """float32 for half-precision tensors (their updates are too small to survive bf16 / fp16 arithmetic)."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
