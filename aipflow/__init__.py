"""aipflow: sharpness-aware and Bayesian optimizers, noisy-label losses and weak supervision on PyTorch Lightning.

The public API is what each module of :data:`PUBLIC_MODULES` lists in its ``__all__`` (docs/plugins.md says what
the plugin api version covers, and lists the same modules). Modules and names starting with ``_`` are private.

This file imports nothing: Lightning loads ``aipflow._entry`` at every ``Trainer``, which runs it.
"""

__all__ = ["PUBLIC_MODULES", "__version__"]

#: the modules whose ``__all__`` is the public API (plugins import only these names)
PUBLIC_MODULES = (
    "aipflow.optim",
    "aipflow.optim.functional",
    "aipflow.losses",
    "aipflow.data",
    "aipflow.tasks",
    "aipflow.models",
    "aipflow.metrics",
    "aipflow.callbacks",
    "aipflow.lightning",
    "aipflow.label_issues",
    "aipflow.review",
    "aipflow.passes",
    "aipflow.plugins",
    "aipflow.sharpness",
    "aipflow.testing",
    "aipflow.config",
    "aipflow.sizes",
    "aipflow.cli",
)


def __getattr__(name: str):
    if name == "__version__":  # read lazily: importing aipflow stays free
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("aipflow")
        except PackageNotFoundError:
            return "0.0.0+unknown"
    raise AttributeError(f"module 'aipflow' has no attribute {name!r}")
