"""The Langevin step (SGLD, Welling & Teh 2011; pSGLD, Li et al. 2016; equations in ``aipflow.optim._langevin``)
in one launch per dtype group: the drift, pSGLD's running average of squared gradients and its preconditioner,
and the Gaussian noise, generated in the kernel by Philox ``randn(seed, offset + i)`` (never stored; the same
stream :func:`aipflow.kernels.noise.normal_like` returns, for a reference)."""

from __future__ import annotations

from collections.abc import Sequence

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
def _langevin_kernel(
    p_ptr,
    g_ptr,
    v_ptr,
    table_ptr,
    seed,
    lr,
    wd,
    noise_variance,
    alpha,
    eps,
    PRECONDITION: tl.constexpr,
    NCOL: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    p_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    g_off = chunk_offset(table_ptr, pid, 1, NCOL, ALIGNED)
    if PRECONDITION:
        v_off = chunk_offset(table_ptr, pid, 2, NCOL, ALIGNED)
    first = chunk_global(table_ptr, pid, NCOL)
    n = chunk_count(table_ptr, pid, NCOL)
    full = n - n % BLOCK
    for phase in tl.static_range(2):  # whole blocks, then the tail (block_indices)
        for start in range(0 if phase == 0 else full, full if phase == 0 else n, BLOCK):
            idx, mask = block_indices(start, n, phase == 1, BLOCK)
            raw = tl.load(p_ptr + p_off + idx, mask=mask)
            theta = raw.to(tl.float32)
            g = tl.load(g_ptr + g_off + idx, mask=mask, other=0.0).to(tl.float32)
            z = tl.randn(seed, first + idx)
            drift = g + wd * theta
            if PRECONDITION:
                v = alpha * tl.load(v_ptr + v_off + idx, mask=mask, other=0.0) + (1.0 - alpha) * g * g
                tl.store(v_ptr + v_off + idx, v, mask=mask)
                precondition = 1.0 / (eps + tl.sqrt(v))
                new = theta - lr * precondition * drift + tl.sqrt(noise_variance * precondition) * z
            else:
                new = theta - lr * drift + tl.sqrt(noise_variance) * z
            tl.store(p_ptr + p_off + idx, new.to(raw.dtype), mask=mask)


def langevin_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    square_avgs: Sequence[Tensor] | None,
    lr: float,
    weight_decay: float,
    noise_variance: float,
    seed: int,
    offset: int = 0,
    alpha: float = 0.99,
    eps: float = 1e-5,
) -> int:
    """SGLD's step, or pSGLD's with ``square_avgs`` (fp32): ``theta <- theta - lr P (g + wd theta) +
    sqrt(noise_variance P) z``, ``z`` = Philox ``randn(seed, offset + i)`` over the concatenated tensors (with
    several dtypes, each dtype group's tensors in turn, so that no two elements share a draw). Returns the offset
    after the last element, for the next call with the same seed."""
    cfg = config()
    lists = [params, grads] + ([square_avgs] if square_avgs is not None else [])
    for group in dtype_groups(*lists):
        p = plan(group, philox_offset=offset)
        offset += sum(t.numel() for t in group[0])
        if not p.n_chunks:
            continue
        _langevin_kernel[p.grid](
            p.bases[0],
            p.bases[1],
            p.bases[2] if square_avgs is not None else p.bases[0],
            p.table,
            int(seed),
            float(lr),
            float(weight_decay),
            float(noise_variance),
            float(alpha),
            float(eps),
            PRECONDITION=square_avgs is not None,
            NCOL=p.table.shape[1],
            ALIGNED=p.aligned,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
    return offset
