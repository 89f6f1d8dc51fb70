"""Lightning's ``lightning.pytorch.callbacks_factory`` entry point, loaded at every ``Trainer`` construction in an
environment where aipflow is installed. Lightning imports this module without catching errors, so it sits at the
top of the package (importing it runs only the empty ``aipflow/__init__.py``) and imports nothing itself; the
factory imports lazily and never raises: a broken aipflow must not take down anyone's Trainer."""

from __future__ import annotations


def default_callbacks() -> list:
    try:
        from aipflow.lightning.defaults import default_callbacks as defaults

        return defaults(scope="trainer")
    except Exception:  # any import problem: no integration rather than a broken Trainer
        return []
