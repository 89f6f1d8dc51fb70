"""Launch plans for multi-tensor kernels: one launch over any number of tensors.

The tensors of each list (parameters, gradients, each state buffer) live in separate allocations. A plan cuts every
tensor into chunks of ``chunk_size`` elements and writes one table row per chunk::

    [offset in list 0, ..., offset in list L-1, global element index, element count]

where "offset in list j" is the chunk's first element counted from the *first* tensor of list j (pointer
difference / element size). A program loads its row and reaches every list by ``base_j + offset + arange``: a
plain gather, which compiled Triton and its CPU interpreter both run (loading pointers from memory, the usual
multi-tensor-apply trick, does not run in the interpreter). The global element index numbers the elements of the
concatenated tensors and is what the Philox noise is keyed on, so noise does not depend on the chunking.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor


@dataclass
class LaunchConfig:
    chunk_size: int = 65536  # elements per program (a multiple of block)
    block: int = 1024  # elements per inner iteration
    # 8 warps: 4 elements per thread per tensor. With 4 warps (8 per thread) ptxas spills on sm_80 in the widest
    # kernels (Adam with the restore fused in, bf16 SAM perturbation), found by the ahead-of-time compile (aot.py)
    num_warps: int = 8


_CONFIG = LaunchConfig()
_PLAN_CACHE: OrderedDict[tuple, Tensor] = OrderedDict()
_PLAN_CACHE_SIZE = 32


def config() -> LaunchConfig:
    return _CONFIG


@contextlib.contextmanager
def launch_config(chunk_size: int, block: int, num_warps: int = 8) -> Iterator[None]:
    """Temporarily use other chunk/block sizes (small ones let the interpreter tests cut tiny tensors)."""
    global _CONFIG
    if block & (block - 1) or chunk_size % block:
        raise ValueError(f"block must be a power of two dividing chunk_size, got block={block}, chunk={chunk_size}")
    saved, _CONFIG = _CONFIG, LaunchConfig(chunk_size, block, num_warps)
    try:
        yield
    finally:
        _CONFIG = saved


@dataclass
class Plan:
    bases: list[Tensor]  # the first tensor of each list: the kernel's pointer arguments
    table: Tensor  # int64 [n_chunks, n_lists + 2] on the tensors' device
    n_chunks: int
    aligned: bool  # every pointer 16-byte aligned: the kernels may promise vector-friendly offsets

    @property
    def grid(self) -> tuple[int]:
        return (self.n_chunks,)


def dtype_groups(*lists: Sequence[Tensor]) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists so that within a group each list has one dtype and everything one device."""
    groups: dict[tuple, list[list[Tensor]]] = {}
    for items in zip(*lists, strict=True):
        key = (items[0].device,) + tuple(t.dtype for t in items)
        groups.setdefault(key, [[] for _ in lists])
        for bucket, t in zip(groups[key], items, strict=True):
            bucket.append(t)
    return [tuple(g) for g in groups.values()]


def plan(lists: Sequence[Sequence[Tensor]], philox_offset: int = 0) -> Plan:
    """The launch plan for parallel lists of same-shaped, contiguous tensors (one dtype per list, one device)."""
    first = lists[0]
    cfg = _CONFIG
    for j, row in enumerate(lists):
        if len(row) != len(first):
            raise ValueError(f"list {j} has {len(row)} tensors, list 0 has {len(first)}")
        for i, t in enumerate(row):
            if t.shape != first[i].shape:
                raise ValueError(f"tensor {i} of list {j} has shape {tuple(t.shape)}, expected {tuple(first[i].shape)}")
            if not t.is_contiguous():
                raise ValueError(f"tensor {i} of list {j} is not contiguous; the fused kernels need contiguous tensors")
            if t.dtype != row[0].dtype or t.device != first[0].device:
                raise ValueError(f"tensor {i} of list {j}: one dtype per list and one device per launch expected")
    ptrs = tuple(tuple(t.data_ptr() for t in row) for row in lists)
    numels = tuple(t.numel() for t in first)
    dtypes = tuple(row[0].dtype for row in lists)
    key = (ptrs, numels, dtypes, cfg.chunk_size, philox_offset, first[0].device)
    table = _PLAN_CACHE.get(key)
    if table is None:
        table = _build_table(ptrs, [row[0].element_size() for row in lists], numels, cfg.chunk_size, philox_offset)
        table = table.to(first[0].device, non_blocking=True) if first[0].device.type != "cpu" else table
        _PLAN_CACHE[key] = table
        if len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    else:
        _PLAN_CACHE.move_to_end(key)
    aligned = all(p % 16 == 0 for row in ptrs for p in row) and cfg.chunk_size % 8 == 0
    return Plan([row[0] for row in lists], table, int(table.shape[0]), aligned)


def _build_table(ptrs, element_sizes, numels, chunk, philox_offset) -> Tensor:
    ptr = torch.tensor(ptrs, dtype=torch.int64)  # [L, n]
    size = torch.tensor(element_sizes, dtype=torch.int64)[:, None]
    delta = ptr - ptr[:, :1]
    if bool((delta % size != 0).any()):  # cannot happen for same-dtype allocations, but never index wrongly
        raise ValueError("tensor addresses are not a whole number of elements apart; cannot build a launch plan")
    rel = delta // size
    numel = torch.tensor(numels, dtype=torch.int64)
    per_tensor = (numel + chunk - 1) // chunk
    tensor_of = torch.repeat_interleave(torch.arange(len(numels)), per_tensor)
    first_chunk = torch.cumsum(per_tensor, 0) - per_tensor
    start = (torch.arange(int(per_tensor.sum())) - first_chunk[tensor_of]) * chunk
    global_start = torch.cumsum(numel, 0) - numel
    cols = [rel[j, tensor_of] + start for j in range(rel.shape[0])]
    cols.append(global_start[tensor_of] + start + philox_offset)
    cols.append(torch.minimum(numel[tensor_of] - start, torch.tensor(chunk)))
    return torch.stack(cols, dim=1).contiguous() if cols[0].numel() else torch.zeros((0, len(cols)), dtype=torch.int64)


def scalar(value: Tensor | float | None, device: torch.device) -> Tensor:
    """A one-element fp32 tensor on ``device`` (kernel scalars that must stay on the device: no host sync)."""
    if value is None:
        value = 1.0
    if isinstance(value, Tensor):
        return value.reshape(1).to(device=device, dtype=torch.float32)
    return torch.full((1,), float(value), dtype=torch.float32, device=device)


def as_flag(found_inf: Tensor | None) -> Tensor | None:
    """``found_inf`` as the one-element fp32 tensor the kernels read."""
    return None if found_inf is None else found_inf.reshape(1).float()


def pointer(tensor: Tensor | None, placeholder: Tensor) -> Tensor:
    """An optional kernel argument: a placeholder pointer when absent (its constexpr flag keeps it unread)."""
    return placeholder if tensor is None else tensor


def grad_multiplier(device: torch.device, grad_scale: Tensor | None, clip_coef: Tensor | None) -> Tensor | None:
    """``clip_coef / grad_scale`` as one device scalar, or ``None`` when neither is given."""
    if grad_scale is None and clip_coef is None:
        return None
    mult = scalar(clip_coef, device)
    if grad_scale is not None:
        mult = mult / scalar(grad_scale, device)
    return mult


# ------------------------------------------------------------------------------------------- device helpers
@triton.jit
def chunk_offset(table_ptr, pid, col: tl.constexpr, NCOL: tl.constexpr, ALIGNED: tl.constexpr):
    off = tl.load(table_ptr + pid * NCOL + col)
    if ALIGNED:
        off = tl.multiple_of(off, 4)
    return off


@triton.jit
def block_indices(start, n, TAIL: tl.constexpr, BLOCK: tl.constexpr):
    """A block's element indices and mask. ``start`` is a multiple of BLOCK by construction (the hint lets aligned
    accesses vectorise); the mask is all true in a chunk's whole blocks (the compiler may then use 128-bit
    accesses) and ``idx < n`` in its tail. Kernels loop ``for phase in tl.static_range(2)`` over ``[0, full)``
    then ``[full, n)``, ``full`` the largest multiple of BLOCK not above n, so that one body serves both."""
    idx = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)
    if TAIL:
        mask = idx < n
    else:
        mask = tl.full([BLOCK], 1, tl.int1)
    return idx, mask


@triton.jit
def chunk_count(table_ptr, pid, NCOL: tl.constexpr):
    return tl.load(table_ptr + pid * NCOL + NCOL - 1)


@triton.jit
def chunk_global(table_ptr, pid, NCOL: tl.constexpr):
    return tl.load(table_ptr + pid * NCOL + NCOL - 2)


@triton.jit
def grad_factor(mult_ptr, HAS_MULT: tl.constexpr):
    """The device scalar gradients are multiplied by (unscale / clip), or 1."""
    factor = 1.0
    if HAS_MULT:
        factor = tl.load(mult_ptr)
    return factor


@triton.jit
def proceed(inf_ptr, HAS_INF: tl.constexpr):
    """1 to update, 0 when ``found_inf`` says skip."""
    go = 1
    if HAS_INF:
        go = tl.where(tl.load(inf_ptr) > 0, 0, 1)
    return go


@triton.jit
def load_weights(w_ptr, w_off, src_ptr, src_off, idx, mask, upd, RESTORE: tl.constexpr):
    """The weights an update starts from: the parameters, or their saved copy (restore fused in)."""
    if RESTORE:
        raw = tl.load(src_ptr + src_off + idx, mask=mask)
    else:
        raw = tl.load(w_ptr + w_off + idx, mask=upd)
    return raw


@triton.jit
def store_weights(w_ptr, w_off, idx, new, raw, mask, upd, RESTORE: tl.constexpr):
    """Write the update; a skipped (``found_inf``) update still writes back the restored weights."""
    if RESTORE:
        tl.store(w_ptr + w_off + idx, tl.where(upd, new, raw), mask=mask)
    else:
        tl.store(w_ptr + w_off + idx, new, mask=upd)
