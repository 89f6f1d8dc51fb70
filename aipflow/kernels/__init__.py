"""Fused Triton kernels for the sharpness-aware and Bayesian updates, with their functional wrappers.

Every wrapper takes parallel lists of tensors (parameters, gradients, state) and runs **one launch per dtype group**,
whatever the number of tensors: a launch plan (``_multi_tensor``) cuts the tensors into chunks and gives each
program the element offset of its chunk from the first tensor of each list, so the kernels read and write through
plain pointer arithmetic (no pointer tables, which Triton's CPU interpreter cannot load). Arithmetic is fp32
inside; parameters may be fp32, fp16 or bf16. ``grad_scale`` / ``found_inf`` let AMP unscaling and inf-skipping
happen inside the kernels.

Modules: ``norm`` (global ||g||, ASAM's ||T_w g||), ``sam`` (perturbation), ``descent`` (SGD / Adam(W) updates,
optionally fused with restoring saved weights and with global-norm clipping), ``bsam``, ``ivon`` (noise from
in-kernel Philox, regenerated from a seed and offset, never stored) and ``noise`` (the same Philox stream as
tensors, to feed a reference implementation). Kernels know nothing of optimizers or Lightning; ``aipflow.optim``
reaches them only through :mod:`aipflow.optim.functional`.
"""

from __future__ import annotations

import os

__all__ = ["available", "can_run_on", "interpreting"]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, set before importing triton)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> bool:
    """Triton imports and can run here: on a CUDA device, or on CPU tensors through the interpreter."""
    if not _importable():
        return False
    import torch

    return interpreting() or torch.cuda.is_available()


def can_run_on(tensors) -> str | None:
    """``None`` when the kernels can take these tensors, else the reason they cannot (for clear errors)."""
    import torch

    if not available():
        if not _importable():
            return "the triton package is not importable here"
        return "no CUDA device (CPU tensors run only in Triton's interpreter: TRITON_INTERPRET=1 before importing it)"
    for t in tensors:
        if t.device.type == "cpu" and not interpreting():
            return "CPU tensors need TRITON_INTERPRET=1 (Triton's interpreter); compiled kernels need CUDA"
        if t.device.type not in ("cpu", "cuda"):
            return f"a tensor is on {t.device}; the kernels run on CUDA (or CPU through the interpreter)"
        if not t.is_contiguous():
            return "a parameter is not contiguous (e.g. channels_last); the fused kernels need contiguous tensors"
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return f"a parameter has dtype {t.dtype}; the kernels take float32, float16 and bfloat16"
    return None


def _importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
