"""What the weak-label tasks add to a Trainer that lacks it (the ``aipflow`` command adds it to every run)."""

from __future__ import annotations


def guard_callbacks(trainer) -> list:
    """A stop at the first non-finite loss or monitored metric (the core's ``NonFiniteGuard``)."""
    from aipflow.lightning import NonFiniteGuard

    return [] if any(isinstance(cb, NonFiniteGuard) for cb in trainer.callbacks) else [NonFiniteGuard()]
