"""The kernels' Gaussian noise: element ``i`` of the concatenated tensors is Philox ``randn(seed, offset + i)``.

``gaussian_sample`` draws a diagonal-Gaussian posterior sample in place with it (bSAM's noisy point and IVON's
sample are both ``m + z / sqrt(scale (s + shift))``); ``normal_like`` returns the same noise as tensors, exactly
the values the bSAM / IVON kernels regenerate, for feeding a reference implementation and for tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from aipflow.kernels._multi_tensor import (
    block_indices,
    chunk_count,
    chunk_global,
    chunk_offset,
    config,
    dtype_groups,
    plan,
)


@triton.jit(do_not_specialize=["seed"])
def _sample_kernel(
    p_ptr, m_ptr, s_ptr, table_ptr, seed, scale, shift, NCOL: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr
):
    pid = tl.program_id(0)
    p_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    m_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    s_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    first = chunk_global(table_ptr, pid, NCOL)
    n = chunk_count(table_ptr, pid, NCOL)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            m = tl.load(m_ptr + m_off + idx, mask=mask).to(tl.float32)
            s = tl.load(s_ptr + s_off + idx, mask=mask, other=1.0)
            z = tl.randn(seed, first + idx)
            tl.store(p_ptr + p_off + idx, (m + z / tl.sqrt(scale * (s + shift))).to(p_ptr.dtype.element_ty), mask=mask)


def gaussian_sample(
    params: Sequence[Tensor],
    means: Sequence[Tensor],
    precisions: Sequence[Tensor],
    scale: float,
    shift: float,
    seed: int,
    offset: int = 0,
) -> None:
    """``params = m + z / sqrt(scale (s + shift))``, ``z`` = Philox ``randn(seed, offset + i)``."""
    cfg = config()
    for group in dtype_groups(params, means, precisions):
        p = plan(group, philox_offset=offset)
        if p.n_chunks:
            _sample_kernel[p.grid](
                *p.bases,
                p.table,
                int(seed),
                float(scale),
                float(shift),
                NCOL=p.table.shape[1],
                ALIGNED=p.aligned,
                BLOCK=cfg.block,
                num_warps=cfg.num_warps,
            )


@triton.jit(do_not_specialize=["seed"])
def _normal_kernel(out_ptr, table_ptr, seed, NCOL: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    o_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    first = chunk_global(table_ptr, pid, NCOL)
    n = chunk_count(table_ptr, pid, NCOL)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            tl.store(out_ptr + o_off + idx, tl.randn(seed, first + idx), mask=mask)


def normal_like(tensors: Sequence[Tensor], seed: int, offset: int = 0) -> list[Tensor]:
    """fp32 standard-normal tensors shaped like ``tensors``, from the kernels' Philox stream."""
    out = [torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in tensors]
    if out:
        p = plan([out], philox_offset=offset)
        if p.n_chunks:
            cfg = config()
            _normal_kernel[p.grid](
                p.bases[0],
                p.table,
                int(seed),
                NCOL=p.table.shape[1],
                ALIGNED=p.aligned,
                BLOCK=cfg.block,
                num_warps=cfg.num_warps,
            )
    return out
