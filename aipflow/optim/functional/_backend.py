"""Which backend runs a step (reference loop, ``torch._foreach_*``, fused Triton kernels), decided in this one place,
and what every optimizer's step functions share: grouping tensors by device and dtype, the exact restore."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from aipflow.optim._base import OptionError

__all__ = ["IMPLS", "check_impl", "compute_dtype", "fused_ops", "groups", "resolve_impl", "restore", "triton_available"]

IMPLS = ("auto", "foreach", "reference", "triton")


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise OptionError("impl", impl, f"be one of {IMPLS}")


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


def groups(*lists: Sequence[Tensor]) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists by (device, dtype) of the first list: foreach ops need one device and dtype."""
    buckets: dict[tuple, list[list[Tensor]]] = defaultdict(lambda: [[] for _ in lists])
    for items in zip(*lists, strict=True):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(buckets[key], items, strict=True):
            bucket.append(item)
    return [tuple(b) for b in buckets.values()]


def restore(params: Sequence[Tensor], backups: Sequence[Tensor], impl: str = "foreach") -> None:
    """Copy the saved weights back: exact, whatever the dtype."""
    if impl == "reference":
        for p, b in zip(params, backups, strict=True):
            p.copy_(b)
        return
    for ps, bs in groups(params, backups):  # triton too: a plain copy is already one pass
        torch._foreach_copy_(ps, bs)


def compute_dtype(t: Tensor) -> torch.dtype:
    """float32 for half-precision tensors (their updates are too small to survive bf16 / fp16 arithmetic)."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
