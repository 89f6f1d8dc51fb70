"""Post-training int8 quantization of Linear layers through torchao (``quantize_``), on CPU:

- ``int8_dynamic``: int8 weights (symmetric, one scale per output row, ``s = max |W_row| / 127.5``) and int8
  activations quantized on the fly (symmetric, one scale per row of the input); the matmul runs in int8.
- ``int8_weight_only``: the same int8 weights, dequantized for a floating-point matmul (smaller, not faster).

``int4_weight_only`` needs torchao's int4 kernels (CUDA, or the fbgemm-gpu-genai package), which a CPU machine
does not have: refused in one line. Quantized models save as a state dict of torchao tensor subclasses that loads
with ``torch.load(weights_only=True)`` once torchao is imported (:func:`load_quantized` does this and rebuilds
the quantized modules before loading).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aipflow_compress._layers import select_layers

__all__ = ["SCHEMES", "load_quantized", "quantize_linear_layers", "save_quantized"]

SCHEMES = ("int8_dynamic", "int8_weight_only")
_CUDA_ONLY = {"int4_weight_only": "torchao's int4 weight-only kernels (CUDA or fbgemm-gpu-genai)"}


def _config(scheme: str):
    if scheme in _CUDA_ONLY:
        raise ValueError(
            f"quantize.scheme={scheme!r} needs {_CUDA_ONLY[scheme]}, which this CPU build does not have; "
            f"use one of {SCHEMES}"
        )
    if scheme not in SCHEMES:
        raise ValueError(f"quantize.scheme must be one of {SCHEMES}, got {scheme!r}")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    return Int8DynamicActivationInt8WeightConfig() if scheme == "int8_dynamic" else Int8WeightOnlyConfig()


def quantize_linear_layers(
    model: nn.Module, scheme: str = "int8_dynamic", include: str | None = None, exclude: str | None = None
) -> list[str]:
    """Quantize ``model``'s Linear layers in place (names matching ``include`` and not ``exclude``, regular
    expressions); returns their names. The model should be in eval mode: quantized layers do not train."""
    config = _config(scheme)
    from torchao.quantization import quantize_

    chosen = list(select_layers(model, (nn.Linear,), include, exclude, "quantize", exact_type=True))
    names = set(chosen)
    quantize_(model, config, filter_fn=lambda module, name: type(module) is nn.Linear and name in names)
    return chosen


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """The quantized model's state dict (torchao tensors included) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def load_quantized(
    model: nn.Module,
    path: str | Path,
    scheme: str = "int8_dynamic",
    include: str | None = None,
    exclude: str | None = None,
) -> nn.Module:
    """Rebuild the quantized modules on ``model`` (the float architecture) and load ``path`` into them, with
    ``weights_only=True`` (importing torchao registers its tensor classes as safe to load)."""
    import torchao  # noqa: F401 - registers torchao's tensor subclasses with torch.serialization

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    quantize_linear_layers(model, scheme, include, exclude)
    model.load_state_dict(state, assign=True)
    return model
