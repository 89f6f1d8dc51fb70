"""SAM / ASAM perturbation in one launch per dtype group (Foret et al. 2021; Kwon et al. 2021, eq. 9):

    e = rho g / ||g||                          (SAM)
    e = rho (|w| + eta)^2 g / ||(|w| + eta) g||  (ASAM)

Two modes: ``"swap"`` writes ``w + e`` into ``out`` and leaves ``w`` untouched (the optimizer then points the
parameter at ``out``: 12 bytes per fp32 parameter, an exact restore for free); ``"copy"`` saves ``w`` into ``out``
and writes ``w + e`` in place (for parameters that are views, e.g. FSDP shards). The norm stays on the device:
the scale ``rho / ||.||`` (0 for a zero norm) is computed inside the kernel, no host sync."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from aipflow.kernels._multi_tensor import (
    block_indices,
    chunk_count,
    chunk_offset,
    config,
    dtype_groups,
    grad_multiplier,
    plan,
    pointer,
)
from aipflow.kernels.norm import sum_of_squares


@triton.jit
def _perturb_kernel(
    w_ptr,
    g_ptr,
    out_ptr,
    table_ptr,
    sumsq_ptr,
    mult_ptr,
    rho,
    eta,
    ADAPTIVE: tl.constexpr,
    SWAP: tl.constexpr,
    HAS_MULT: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    w_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    o_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    n = chunk_count(table_ptr, pid, NCOL)
    norm = tl.sqrt(tl.load(sumsq_ptr))
    scale = tl.where(norm > 0, rho / tl.maximum(norm, 1e-38), 0.0)
    if HAS_MULT:
        scale = scale * tl.load(mult_ptr)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            w_raw = tl.load(w_ptr + w_off + idx, mask=mask)
            w = w_raw.to(tl.float32)
            e = tl.load(g_ptr + g_off + idx, mask=mask).to(tl.float32) * scale
            if ADAPTIVE:
                t = tl.abs(w) + eta
                e = e * t * t
            moved = (w + e).to(w_raw.dtype)
            if SWAP:
                tl.store(out_ptr + o_off + idx, moved, mask=mask)
            else:
                tl.store(out_ptr + o_off + idx, w_raw, mask=mask)
                tl.store(w_ptr + w_off + idx, moved, mask=mask)


def sam_perturb(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    out: Sequence[Tensor],
    rho: float,
    adaptive: bool = False,
    eta: float = 0.0,
    mode: str = "swap",
    grad_scale: Tensor | None = None,
    squared_norm: Tensor | None = None,
) -> Tensor:
    """Move to ``w + e``: ``mode="swap"`` writes it into ``out`` (w untouched); ``"copy"`` saves w into ``out``
    and moves w in place. ``grad_scale``: the gradients are scaled by it (AMP) and are unscaled on the fly.
    ``squared_norm``: the (unscaled) squared norm to divide by, when it spans more than these lists (SAM's
    norm is global over all parameter groups); computed here when omitted. Returns the squared norm used (0-dim
    fp32 tensor on the device; the caller takes the root if it needs it, so no launch is spent on it here).
    Launches: the squared norm when not given (one per dtype group + a sum) and the perturbation (one per dtype
    group)."""
    if mode not in ("swap", "copy"):
        raise ValueError(f"mode must be 'swap' or 'copy', got {mode!r}")
    if not params:
        return torch.zeros(())
    if squared_norm is None:
        squared = sum_of_squares(grads, params, adaptive, eta, grad_scale)
    else:
        squared = squared_norm.reshape(1).to(device=params[0].device, dtype=torch.float32)
    device = params[0].device
    mult = grad_multiplier(device, grad_scale, None)
    cfg = config()
    for group in dtype_groups(params, grads, out):
        p = plan(group)
        if p.n_chunks == 0:
            continue
        _perturb_kernel[p.grid](
            *p.bases,
            p.table,
            squared,
            pointer(mult, squared),
            float(rho),
            float(eta),
            ADAPTIVE=adaptive,
            SWAP=mode == "swap",
            HAS_MULT=mult is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
    return squared.reshape(())
