"""The kernels' Gaussian noise as tensors: element ``i`` of the concatenated tensors is Philox
``randn(seed, offset + i)``, exactly the value the bSAM / IVON kernels regenerate in place. For feeding a reference
implementation the same noise, and for tests of the noise itself."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from aipflow.kernels._multi_tensor import chunk_count, chunk_global, chunk_offset, config, plan


@triton.jit(do_not_specialize=["seed"])
def _normal_kernel(out_ptr, table_ptr, seed, NCOL: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    o_off = chunk_offset(table_ptr, pid, 0, NCOL, ALIGNED)
    first = chunk_global(table_ptr, pid, NCOL)
    n = chunk_count(table_ptr, pid, NCOL)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + o_off + idx, tl.randn(seed, first + idx), mask=idx < n)


def normal_like(tensors: Sequence[Tensor], seed: int, offset: int = 0) -> list[Tensor]:
    """fp32 standard-normal tensors shaped like ``tensors``, from the kernels' Philox stream."""
    out = [torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in tensors]
    if out:
        p = plan([out], philox_offset=offset)
        if p.n_chunks:
            cfg = config()
            _normal_kernel[p.grid](
                p.bases[0], p.table, int(seed), NCOL=p.table.shape[1], ALIGNED=p.aligned, BLOCK=cfg.block
            )
    return out
