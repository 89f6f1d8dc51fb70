"""aipflow: sharpness-aware and Bayesian optimizers, noisy-label losses and weak supervision on PyTorch Lightning.

The public API is what each public module lists in its ``__all__``: ``aipflow.optim``, ``aipflow.losses``,
``aipflow.data``, ``aipflow.tasks``, ``aipflow.models``, ``aipflow.metrics``, ``aipflow.callbacks``,
``aipflow.lightning``, ``aipflow.passes``, ``aipflow.plugins``, ``aipflow.sharpness``, ``aipflow.testing``,
``aipflow.config``
(docs/plugins.md says what the plugin api version covers). Modules and names starting with ``_`` are private.

This file imports nothing: Lightning loads ``aipflow._entry`` at every ``Trainer``, which runs it.
"""

__all__ = ["__version__"]


def __getattr__(name: str):
    if name == "__version__":  # read lazily: importing aipflow stays free
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("aipflow")
        except PackageNotFoundError:
            return "0.0.0+unknown"
    raise AttributeError(f"module 'aipflow' has no attribute {name!r}")
