"""Lightning's ``lightning.pytorch.callbacks_factory`` entry point: loaded at every ``Trainer`` construction, so it
imports lazily and never raises (a broken aipflow must not take down someone's Trainer)."""

from __future__ import annotations


def default_callbacks() -> list:
    try:
        from aipflow.lightning.sharpness import AutomaticSharpnessAwareTraining

        return [AutomaticSharpnessAwareTraining()]
    except Exception:  # any import problem: no integration rather than a broken Trainer
        return []
