"""IVON's phases in one launch each per dtype group (Shen et al., ICML 2024, Alg. 1; equations in
``aipflow.optim.ivon``). The sample's noise ``eps`` is Philox ``randn(seed, offset + i)``: the sampling kernel
generates it, and the curvature estimate ``h_hat = g eps / sigma`` regenerates it from the same seed instead of
storing it. With one Monte-Carlo sample and no data-parallel averaging, ``h_hat`` is never materialised: the update
kernel computes it from the gradient, the seed and the old ``h`` (one pass over memory for the whole descent)."""

from __future__ import annotations

from collections.abc import Sequence

import triton
import triton.language as tl
from torch import Tensor

from aipflow.kernels._multi_tensor import (
    as_flag,
    block_indices,
    chunk_count,
    chunk_global,
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
from aipflow.kernels.noise import gaussian_sample


def ivon_sample(
    params: Sequence[Tensor],
    means: Sequence[Tensor],
    hessians: Sequence[Tensor],
    ess: float,
    weight_decay: float,
    seed: int,
    offset: int = 0,
) -> None:
    """``theta = m + eps / sqrt(ess (h + delta))``, ``eps`` = Philox ``randn(seed, offset + i)``."""
    gaussian_sample(params, means, hessians, ess, weight_decay, seed, offset)


@triton.jit(do_not_specialize=["seed"])
def _accumulate_kernel(
    g_ptr,
    h_ptr,
    hh_ptr,
    gs_ptr,
    table_ptr,
    mult_ptr,
    seed,
    ess,
    wd,
    SUM_G: tl.constexpr,
    HAS_MULT: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    g_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    h_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    hh_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    if SUM_G:
        gs_off = chunk_offset(table_ptr, pid, 3, NCOL, ALIGNED)
    first = chunk_global(table_ptr, pid, NCOL)
    n = chunk_count(table_ptr, pid, NCOL)
    mult = grad_factor(mult_ptr, HAS_MULT)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            g = tl.load(g_ptr + g_off + idx, mask=mask, other=0.0).to(tl.float32) * mult
            h = tl.load(h_ptr + h_off + idx, mask=mask, other=1.0)
            eps = tl.randn(seed, first + idx)
            hh = tl.load(hh_ptr + hh_off + idx, mask=mask, other=0.0)
            tl.store(hh_ptr + hh_off + idx, hh + g * eps * tl.sqrt(ess * (h + wd)), mask=mask)
            if SUM_G:
                gs = tl.load(gs_ptr + gs_off + idx, mask=mask, other=0.0)
                tl.store(gs_ptr + gs_off + idx, gs + g, mask=mask)


def ivon_accumulate(
    grads: Sequence[Tensor],
    hessians: Sequence[Tensor],
    h_hats: Sequence[Tensor],
    ess: float,
    weight_decay: float,
    seed: int,
    offset: int = 0,
    g_sums: Sequence[Tensor] | None = None,
    grad_scale: Tensor | None = None,
) -> None:
    """``h_hat += g eps sqrt(ess (h + delta))`` with ``eps`` regenerated from ``(seed, offset)``; with ``g_sums``
    also ``g_sum += g`` (several Monte-Carlo samples)."""
    cfg = config()
    lists = [grads, hessians, h_hats] + ([g_sums] if g_sums else [])
    for group in dtype_groups(*lists):
        p = plan(group, philox_offset=offset)
        if not p.n_chunks:
            continue
        mult = grad_multiplier(p.table.device, grad_scale, None)
        _accumulate_kernel[p.grid](
            *p.bases[:3],
            p.bases[3] if g_sums else p.bases[2],
            p.table,
            pointer(mult, p.table),
            int(seed),
            float(ess),
            float(weight_decay),
            SUM_G=bool(g_sums),
            HAS_MULT=mult is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )


@triton.jit(do_not_specialize=["seed"])
def _update_kernel(
    p_ptr,
    g_ptr,
    h_ptr,
    mom_ptr,
    hh_ptr,
    src_ptr,
    table_ptr,
    mult_ptr,
    inf_ptr,
    seed,
    ess,
    lr,
    beta1,
    beta2,
    wd,
    inv_debias,
    clip_radius,
    FUSED_HHAT: tl.constexpr,
    RESTORE: tl.constexpr,
    CLIP: tl.constexpr,
    HAS_MULT: tl.constexpr,
    HAS_INF: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    p_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    h_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    mom_off = chunk_offset(table_ptr, pid, 3, NCOL, ALIGNED)
    if not FUSED_HHAT:
        hh_off = chunk_offset(table_ptr, pid, 4, NCOL, ALIGNED)
    src_off = p_off
    if RESTORE:
        src_off = chunk_offset(table_ptr, pid, NCOL - 3, NCOL, ALIGNED)
    first = chunk_global(table_ptr, pid, NCOL)
    n = chunk_count(table_ptr, pid, NCOL)
    mult = grad_factor(mult_ptr, HAS_MULT)
    go = proceed(inf_ptr, HAS_INF)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            upd = mask & (go != 0)
            m_raw = load_weights(p_ptr, p_off, src_ptr, src_off, idx, mask, upd, RESTORE)
            m = m_raw.to(tl.float32)
            g_hat = tl.load(g_ptr + g_off + idx, mask=upd, other=0.0).to(tl.float32) * mult
            h = tl.load(h_ptr + h_off + idx, mask=upd, other=1.0)
            if FUSED_HHAT:
                h_hat = g_hat * tl.randn(seed, first + idx) * tl.sqrt(ess * (h + wd))
            else:
                h_hat = tl.load(hh_ptr + hh_off + idx, mask=upd, other=0.0)
            mom = beta1 * tl.load(mom_ptr + mom_off + idx, mask=upd, other=0.0) + (1.0 - beta1) * g_hat
            diff = h - h_hat
            h = beta2 * h + (1.0 - beta2) * h_hat + 0.5 * (1.0 - beta2) * (1.0 - beta2) * diff * diff / (h + wd)
            step = (mom * inv_debias + wd * m) / (h + wd)
            if CLIP:
                step = tl.minimum(tl.maximum(step, -clip_radius), clip_radius)
            new_m = (m - lr * step).to(m_raw.dtype)
            tl.store(mom_ptr + mom_off + idx, mom, mask=upd)
            tl.store(h_ptr + h_off + idx, h, mask=upd)
            store_weights(p_ptr, p_off, idx, new_m, m_raw, mask, upd, RESTORE)


def ivon_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momenta: Sequence[Tensor],
    hessians: Sequence[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    step: int,
    clip_radius: float,
    h_hats: Sequence[Tensor] | None = None,
    means: Sequence[Tensor] | None = None,
    ess: float | None = None,
    seed: int | None = None,
    offset: int = 0,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """IVON's descent. Either ``h_hats`` (materialised estimates), or ``ess`` and the sample's ``seed`` /
    ``offset``, from which the kernel computes ``h_hat = g eps sqrt(ess (h + delta))`` itself. With ``means`` the
    mean is read from them (the restore from the sample is fused in)."""
    fused = h_hats is None
    if fused and (ess is None or seed is None):
        raise ValueError("ivon_update needs h_hats, or ess and the sample's seed to compute them")
    cfg = config()
    inf = as_flag(found_inf)
    lists = [params, grads, hessians, momenta] + ([] if fused else [h_hats]) + ([means] if means else [])
    clip = clip_radius != float("inf")
    for group in dtype_groups(*lists):
        p = plan(group, philox_offset=offset)
        if not p.n_chunks:
            continue
        mult = grad_multiplier(p.table.device, grad_scale, None)
        _update_kernel[p.grid](
            *p.bases[:4],
            p.bases[0] if fused else p.bases[4],
            p.bases[-1] if means else p.bases[0],
            p.table,
            pointer(mult, p.table),
            pointer(inf, p.table),
            int(seed or 0),
            float(ess or 0.0),
            float(lr),
            float(beta1),
            float(beta2),
            float(weight_decay),
            1.0 / (1.0 - beta1**step),
            float(clip_radius) if clip else 0.0,
            FUSED_HHAT=fused,
            RESTORE=bool(means),
            CLIP=clip,
            HAS_MULT=mult is not None,
            HAS_INF=inf is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
