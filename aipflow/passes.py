"""Whether the current forward pass is an extra evaluation of a multi-pass optimizer (SAM's second pass, bSAM's
sub-batch passes, ...). Components with per-sample state (ELR's targets, Co-teaching's statistics) update it
only outside such passes, so that state moves once per step, as the papers assume."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["extra_pass", "in_extra_pass"]

_EXTRA_PASS: ContextVar[bool] = ContextVar("aipflow_extra_pass", default=False)


def in_extra_pass() -> bool:
    return _EXTRA_PASS.get()


@contextmanager
def extra_pass() -> Iterator[None]:
    token = _EXTRA_PASS.set(True)
    try:
        yield
    finally:
        _EXTRA_PASS.reset(token)
