"""Base-optimizer updates in one launch per dtype group, with the same arithmetic as ``torch.optim.SGD`` and
``torch.optim.Adam`` / ``AdamW`` (so their state dicts stay interchangeable), and three fusions SAM needs:

- ``backups``: read the weights from a saved copy (SAM's restore after an in-place perturbation) and write the
  updated weights over the parameters: the restore costs no extra pass;
- ``grad_scale`` / ``found_inf`` (AMP): gradients are unscaled on the fly; a non-zero ``found_inf`` skips the
  update (the weights are still restored from ``backups``);
- ``clip_coef`` (from :func:`clip_coefficient`): global-norm clipping of the descent gradient, applied inside
  the update (one norm launch before it, no host sync).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from aipflow.kernels._multi_tensor import (
    as_flag,
    block_indices,
    chunk_count,
    chunk_offset,
    config,
    dtype_groups,
    grad_factor,
    grad_multiplier,
    load_weights,
    plan,
    pointer,
    proceed,
    store_weights,
)
from aipflow.kernels.norm import global_norm


def clip_coefficient(grads: Sequence[Tensor], max_grad_norm: float, grad_scale: Tensor | None = None) -> Tensor:
    """``min(1, max_grad_norm / (||g|| + 1e-6))`` over all ``grads`` (``torch.nn.utils.clip_grad_norm_``'s
    coefficient), a device scalar: pass it as ``clip_coef`` to clip inside the update."""
    norm = global_norm(grads, grad_scale=grad_scale)
    return torch.clamp(max_grad_norm / (norm + 1e-6), max=1.0)


@triton.jit
def _sgd_kernel(
    w_ptr,
    g_ptr,
    buf_ptr,
    src_ptr,
    table_ptr,
    mult_ptr,
    inf_ptr,
    lr,
    momentum,
    dampening,
    weight_decay,
    HAS_MOMENTUM: tl.constexpr,
    FIRST: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    RESTORE: tl.constexpr,
    HAS_MULT: tl.constexpr,
    HAS_INF: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    w_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    if HAS_MOMENTUM:
        b_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    s_off = w_off
    if RESTORE:
        s_off = chunk_offset(table_ptr, pid, NCOL - 3, NCOL, ALIGNED)
    n = chunk_count(table_ptr, pid, NCOL)
    mult = grad_factor(mult_ptr, HAS_MULT)
    go = proceed(inf_ptr, HAS_INF)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            upd = mask & (go != 0)
            w_raw = load_weights(w_ptr, w_off, src_ptr, s_off, idx, mask, upd, RESTORE)
            w = w_raw.to(tl.float32)
            d = tl.load(g_ptr + g_off + idx, mask=upd, other=0.0).to(tl.float32) * mult
            if MAXIMIZE:
                d = -d
            d = d + weight_decay * w
            if HAS_MOMENTUM:
                if FIRST:
                    buf = d
                else:
                    buf = tl.load(buf_ptr + b_off + idx, mask=upd, other=0.0) * momentum + (1.0 - dampening) * d
                tl.store(buf_ptr + b_off + idx, buf, mask=upd)
                if NESTEROV:
                    d = d + momentum * buf
                else:
                    d = buf
            new_w = (w - lr * d).to(w_raw.dtype)
            store_weights(w_ptr, w_off, idx, new_w, w_raw, mask, upd, RESTORE)


def sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor] | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first: bool = False,
    backups: Sequence[Tensor] | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    clip_coef: Tensor | None = None,
) -> None:
    """``torch.optim.SGD``'s update. ``first``: the momentum buffers are uninitialised and take the first
    gradient as torch does (``buf = d``); they must be allocated (``torch.empty_like``) by the caller."""
    if not params:
        return
    has_momentum = momentum != 0.0
    if has_momentum and momentum_buffers is None:
        raise ValueError("momentum != 0 needs momentum_buffers")
    device = params[0].device
    mult = grad_multiplier(device, grad_scale, clip_coef)
    inf = as_flag(found_inf)
    lists = [params, grads] + ([momentum_buffers] if has_momentum else []) + ([backups] if backups else [])
    cfg = config()
    for group in dtype_groups(*lists):
        p = plan(group)
        if p.n_chunks == 0:
            continue
        w, g = p.bases[0], p.bases[1]
        buf = p.bases[2] if has_momentum else w
        src = p.bases[-1] if backups else w
        _sgd_kernel[p.grid](
            w,
            g,
            buf,
            src,
            p.table,
            pointer(mult, p.table),
            pointer(inf, p.table),
            float(lr),
            float(momentum),
            float(dampening),
            float(weight_decay),
            HAS_MOMENTUM=has_momentum,
            FIRST=first,
            NESTEROV=nesterov,
            MAXIMIZE=maximize,
            RESTORE=bool(backups),
            HAS_MULT=mult is not None,
            HAS_INF=inf is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )


@triton.jit
def _adam_kernel(
    w_ptr,
    g_ptr,
    m_ptr,
    v_ptr,
    src_ptr,
    table_ptr,
    mult_ptr,
    inf_ptr,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    bias_correction1,
    sqrt_bias_correction2,
    DECOUPLED: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    RESTORE: tl.constexpr,
    HAS_MULT: tl.constexpr,
    HAS_INF: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    w_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    m_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    v_off = chunk_offset(table_ptr, pid, 3, NCOL, ALIGNED)
    s_off = w_off
    if RESTORE:
        s_off = chunk_offset(table_ptr, pid, 4, NCOL, ALIGNED)
    n = chunk_count(table_ptr, pid, NCOL)
    mult = grad_factor(mult_ptr, HAS_MULT)
    go = proceed(inf_ptr, HAS_INF)
    step_size = lr / bias_correction1
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            upd = mask & (go != 0)
            w_raw = load_weights(w_ptr, w_off, src_ptr, s_off, idx, mask, upd, RESTORE)
            w = w_raw.to(tl.float32)
            g = tl.load(g_ptr + g_off + idx, mask=upd, other=0.0).to(tl.float32) * mult
            if MAXIMIZE:
                g = -g
            if DECOUPLED:
                w = w * (1.0 - lr * weight_decay)
            else:
                g = g + weight_decay * w
            m = tl.load(m_ptr + m_off + idx, mask=upd, other=0.0)
            v = tl.load(v_ptr + v_off + idx, mask=upd, other=0.0)
            m = m + (1.0 - beta1) * (g - m)
            v = v * beta2 + (1.0 - beta2) * g * g
            tl.store(m_ptr + m_off + idx, m, mask=upd)
            tl.store(v_ptr + v_off + idx, v, mask=upd)
            denom = tl.sqrt(v) / sqrt_bias_correction2 + eps
            new_w = (w - step_size * m / denom).to(w_raw.dtype)
            store_weights(w_ptr, w_off, idx, new_w, w_raw, mask, upd, RESTORE)


def adam_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = True,
    maximize: bool = False,
    step: int,
    backups: Sequence[Tensor] | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    clip_coef: Tensor | None = None,
) -> None:
    """``torch.optim.AdamW`` (``decoupled=True``) or ``Adam`` (L2 weight decay) at step ``step`` (>= 1, counted
    by the caller, already including this step); fp32 moments."""
    if not params:
        return
    if step < 1:
        raise ValueError(f"step must be >= 1 (the count including this step), got {step}")
    device = params[0].device
    mult = grad_multiplier(device, grad_scale, clip_coef)
    inf = as_flag(found_inf)
    lists = [params, grads, exp_avgs, exp_avg_sqs] + ([backups] if backups else [])
    cfg = config()
    for group in dtype_groups(*lists):
        p = plan(group)
        if p.n_chunks == 0:
            continue
        _adam_kernel[p.grid](
            *p.bases[:4],
            p.bases[-1] if backups else p.bases[0],
            p.table,
            pointer(mult, p.table),
            pointer(inf, p.table),
            float(lr),
            float(beta1),
            float(beta2),
            float(eps),
            float(weight_decay),
            1.0 - beta1**step,
            (1.0 - beta2**step) ** 0.5,
            DECOUPLED=decoupled,
            MAXIMIZE=maximize,
            RESTORE=bool(backups),
            HAS_MULT=mult is not None,
            HAS_INF=inf is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
