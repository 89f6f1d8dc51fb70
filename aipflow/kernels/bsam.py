"""bSAM's three phases in one launch each per dtype group (Moellenhoff & Khan, ICLR 2023; the equations are in
``aipflow.optim.bsam``). The posterior sample's noise ``z`` is Philox ``randn(seed, offset + i)``, generated in the
kernel and never stored."""

from __future__ import annotations

from collections.abc import Sequence

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
from aipflow.kernels.noise import gaussian_sample


def bsam_noisy_point(
    params: Sequence[Tensor],
    means: Sequence[Tensor],
    precisions: Sequence[Tensor],
    n: float,
    seed: int,
    offset: int = 0,
) -> None:
    """``theta = m + z / sqrt(N s)``, ``z`` = Philox ``randn(seed, offset + i)``."""
    gaussian_sample(params, means, precisions, n, 0.0, seed, offset)


@triton.jit
def _perturbed_point_kernel(
    p_ptr,
    m_ptr,
    g_ptr,
    s_ptr,
    h_ptr,
    table_ptr,
    mult_ptr,
    rho,
    HAS_MULT: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    p_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    m_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    s_off = chunk_offset(table_ptr, pid, 3, NCOL, ALIGNED)
    h_off = chunk_offset(table_ptr, pid, 4, NCOL, ALIGNED)
    n = chunk_count(table_ptr, pid, NCOL)
    mult = grad_factor(mult_ptr, HAS_MULT)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            m = tl.load(m_ptr + m_off + idx, mask=mask).to(tl.float32)
            g = tl.load(g_ptr + g_off + idx, mask=mask, other=0.0).to(tl.float32) * mult
            s = tl.load(s_ptr + s_off + idx, mask=mask, other=1.0)
            h = tl.load(h_ptr + h_off + idx, mask=mask, other=0.0)
            tl.store(h_ptr + h_off + idx, h + tl.sqrt(s) * tl.abs(g), mask=mask)
            tl.store(p_ptr + p_off + idx, (m + rho * g / s).to(p_ptr.dtype.element_ty), mask=mask)


def bsam_perturbed_point(
    params: Sequence[Tensor],
    means: Sequence[Tensor],
    grads: Sequence[Tensor],
    precisions: Sequence[Tensor],
    h_sums: Sequence[Tensor],
    rho: float,
    grad_scale: Tensor | None = None,
) -> None:
    """``theta = m + rho g / s`` and ``h_sum += sqrt(s) |g|`` (``g`` unscaled by ``grad_scale`` when given)."""
    cfg = config()
    for group in dtype_groups(params, means, grads, precisions, h_sums):
        p = plan(group)
        if not p.n_chunks:
            continue
        mult = grad_multiplier(p.table.device, grad_scale, None)
        _perturbed_point_kernel[p.grid](
            *p.bases,
            p.table,
            pointer(mult, p.table),
            float(rho),
            HAS_MULT=mult is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )


@triton.jit
def _update_kernel(
    p_ptr,
    g_ptr,
    h_ptr,
    gbar_ptr,
    s_ptr,
    src_ptr,
    table_ptr,
    inf_ptr,
    lr,
    beta1,
    beta2,
    damping,
    delta,
    RESTORE: tl.constexpr,
    HAS_INF: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    p_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    h_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    gb_off = chunk_offset(table_ptr, pid, 3, NCOL, ALIGNED)
    s_off = chunk_offset(table_ptr, pid, 4, NCOL, ALIGNED)
    src_off = p_off
    if RESTORE:
        src_off = chunk_offset(table_ptr, pid, 5, NCOL, ALIGNED)
    n = chunk_count(table_ptr, pid, NCOL)
    go = proceed(inf_ptr, HAS_INF)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            upd = mask & (go != 0)
            m_raw = load_weights(p_ptr, p_off, src_ptr, src_off, idx, mask, upd, RESTORE)
            m = m_raw.to(tl.float32)
            g = tl.load(g_ptr + g_off + idx, mask=upd, other=0.0).to(tl.float32)
            h = tl.load(h_ptr + h_off + idx, mask=upd, other=0.0)
            gbar = tl.load(gbar_ptr + gb_off + idx, mask=upd, other=0.0)
            s = tl.load(s_ptr + s_off + idx, mask=upd, other=1.0)
            gbar = beta1 * gbar + (1.0 - beta1) * (g + delta * m)
            new_m = (m - lr * gbar / s).to(m_raw.dtype)
            s = beta2 * s + (1.0 - beta2) * (h + damping + delta)
            tl.store(gbar_ptr + gb_off + idx, gbar, mask=upd)
            tl.store(s_ptr + s_off + idx, s, mask=upd)
            store_weights(p_ptr, p_off, idx, new_m, m_raw, mask, upd, RESTORE)


def bsam_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    h_means: Sequence[Tensor],
    momenta: Sequence[Tensor],
    precisions: Sequence[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    damping: float,
    delta: float,
    means: Sequence[Tensor] | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """bSAM's descent; with ``means`` the mean is read from them (the restore from the last perturbed point is
    fused in). A non-zero ``found_inf`` leaves the state untouched (and still restores the mean)."""
    cfg = config()
    inf = as_flag(found_inf)
    lists = [params, grads, h_means, momenta, precisions] + ([means] if means else [])
    for group in dtype_groups(*lists):
        p = plan(group)
        if not p.n_chunks:
            continue
        _update_kernel[p.grid](
            *p.bases[:5],
            p.bases[-1] if means else p.bases[0],
            p.table,
            pointer(inf, p.table),
            float(lr),
            float(beta1),
            float(beta2),
            float(damping),
            float(delta),
            RESTORE=bool(means),
            HAS_INF=inf is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
