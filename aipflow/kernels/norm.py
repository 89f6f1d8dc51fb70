"""Global gradient norm over many tensors in one launch: ``||g||_2`` (SAM, clipping) or ``||(|w| + eta) g||_2``
(ASAM's ``||T_w g||``), fp32 accumulation, optionally of the unscaled gradient ``g / grad_scale``.

Each program writes the sum of squares of its chunk; the partial sums are added by one ``torch.sum`` (a fixed
order, so the result is deterministic, unlike atomics)."""

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


@triton.jit
def _sum_of_squares_kernel(
    g_ptr,
    w_ptr,
    table_ptr,
    partial_ptr,
    mult_ptr,
    eta,
    ADAPTIVE: tl.constexpr,
    HAS_MULT: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    g_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    n = chunk_count(table_ptr, pid, NCOL)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    if ADAPTIVE:
        w_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            g = tl.load(g_ptr + g_off + idx, mask=mask, other=0.0).to(tl.float32)
            if ADAPTIVE:
                w = tl.load(w_ptr + w_off + idx, mask=mask, other=0.0).to(tl.float32)
                g = (tl.abs(w) + eta) * g
            acc += g * g
    total = tl.sum(acc, axis=0)
    if HAS_MULT:
        m = tl.load(mult_ptr)
        total = total * m * m
    tl.store(partial_ptr + pid, total)


def global_norm(
    grads: Sequence[Tensor],
    params: Sequence[Tensor] | None = None,
    adaptive: bool = False,
    eta: float = 0.0,
    grad_scale: Tensor | None = None,
) -> Tensor:
    """``||g||_2`` over all ``grads`` (``||(|w| + eta) g||_2`` with ``adaptive``), as a 0-dim fp32 tensor on their
    device. ``grad_scale``: the norm of ``g / grad_scale``."""
    return sum_of_squares(grads, params, adaptive, eta, grad_scale).sqrt().reshape(())


def sum_of_squares(
    grads: Sequence[Tensor],
    params: Sequence[Tensor] | None = None,
    adaptive: bool = False,
    eta: float = 0.0,
    grad_scale: Tensor | None = None,
) -> Tensor:
    """The squared norm as a one-element fp32 tensor: one launch per dtype group plus one sum (kernels that need
    the norm take this and the square root themselves, saving a launch)."""
    if not grads:
        return torch.zeros(1)
    device = grads[0].device
    lists = (grads, params) if adaptive else (grads,)
    if adaptive and (params is None or len(params) != len(grads)):
        raise ValueError("adaptive=True needs params, one per gradient")
    cfg = config()
    partials = []
    for group in dtype_groups(*lists):
        p = plan(group)
        if p.n_chunks == 0:
            continue
        part = torch.empty(p.n_chunks, dtype=torch.float32, device=device)
        mult = grad_multiplier(device, grad_scale, None)
        _sum_of_squares_kernel[p.grid](
            p.bases[0],
            p.bases[-1],
            p.table,
            part,
            pointer(mult, part),
            float(eta),
            ADAPTIVE=adaptive,
            HAS_MULT=mult is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
        partials.append(part)
    if not partials:
        return torch.zeros(1, dtype=torch.float32, device=device)
    return (torch.cat(partials) if len(partials) > 1 else partials[0]).sum(0, keepdim=True)
