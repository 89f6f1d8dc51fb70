"""Post-training int8 quantization of Linear layers through torchao (``quantize_``), on CPU:

- ``int8_dynamic``: int8 weights (symmetric, one scale per output row, ``s = max |W_row| / 127.5``) and int8
  activations quantized on the fly (symmetric, one scale per row of the input); the matmul runs in int8.
- ``int8_weight_only``: the same int8 weights, dequantized for a floating-point matmul (smaller, not faster).

Static int8 (:func:`quantize_static`) quantizes activations with scales fixed from calibration batches: the model
is exported (``torch.export``), torchao's PT2E flow with the X86 Inductor quantizer inserts observers (per-tensor
activations, per-channel weights), the calibration batches run through it, and it is converted to a graph with
quantize / dequantize around int8 weights. Eager execution of that graph runs the reference ops (no faster than
float); ``torch.compile`` (Inductor) fuses them into int8 kernels. It is saved as an exported program
(``torch.export.save`` / ``torch.export.load``, not pickle). ``torch.ao.quantization``'s own PT2E is gone in torch
2.14 and is not used.

``int4_weight_only`` needs torchao's int4 kernels (CUDA, or the fbgemm-gpu-genai package), which a CPU machine
does not have: refused in one line. :func:`save_quantized` stores each torchao tensor as its plain inner tensors
(int8 data, scales, zero points), so ``torch.load(weights_only=True)`` reads the file on any Python without
unpickling a torchao object (pickled torchao tensors failed to load that way on Python 3.11.2: their metadata
pickles through ``getattr``); :func:`load_quantized` rebuilds the quantized modules and puts the tensors back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aipflow_compress._layers import select_layers

__all__ = ["SCHEMES", "load_quantized", "quantize_linear_layers", "quantize_static", "save_quantized"]

SCHEMES = ("int8_dynamic", "int8_weight_only")
_CUDA_ONLY = {"int4_weight_only": "torchao's int4 weight-only kernels (CUDA or fbgemm-gpu-genai)"}


def _config(scheme: str):
    if scheme == "int8_static":
        raise ValueError("quantize.scheme='int8_static' calibrates on data: use quantize_static")
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


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every torchao tensor split into its plain inner tensors (``key::qdata``, ...): what
    ``torch.load(weights_only=True)`` reads on any Python, with no torchao object pickled."""
    plain = {}
    for key, value in model.state_dict().items():
        flatten = getattr(value, "__tensor_flatten__", None)
        if flatten is None or type(value) is torch.Tensor:
            plain[key] = value
            continue
        for inner in flatten()[0]:
            plain[f"{key}::{inner}"] = getattr(value, inner)
    return plain


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """The quantized model's state dict to ``path``, torchao tensors stored as their plain inner tensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_plain_state(model), path)
    return path


@torch.no_grad()
def load_quantized(
    model: nn.Module,
    path: str | Path,
    scheme: str = "int8_dynamic",
    include: str | None = None,
    exclude: str | None = None,
) -> nn.Module:
    """Rebuild the quantized modules on ``model`` (the float architecture) and load ``path`` into them with
    ``weights_only=True``: each torchao tensor is put back together from its saved inner tensors and the settings
    the rebuilt module carries."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    quantize_linear_layers(model, scheme, include, exclude)
    rebuilt_keys: set[str] = set()
    for name, module in model.named_modules():
        for attr, value in list(module._parameters.items()):
            key = f"{name}.{attr}" if name else attr
            flatten = getattr(value, "__tensor_flatten__", None)
            if value is None or flatten is None or type(value) in (torch.Tensor, nn.Parameter):
                continue
            inner_names, context = flatten()
            missing = [n for n in inner_names if f"{key}::{n}" not in state]
            if missing:
                raise ValueError(f"load_quantized: {path} has no {key}::{missing[0]} (saved with another scheme?)")
            inner = {n: state.pop(f"{key}::{n}") for n in inner_names}
            rebuilt = type(value).__tensor_unflatten__(inner, context, value.shape, value.stride())
            module._parameters[attr] = nn.Parameter(rebuilt, requires_grad=False)
            rebuilt_keys.add(key)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - rebuilt_keys:
        raise ValueError(
            f"load_quantized: {path} does not fit the model (missing {sorted(set(missing) - rebuilt_keys)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    return model


def quantize_static(model: nn.Module, example_inputs: torch.Tensor, calibration) -> nn.Module:
    """Static int8 post-training quantization (PT2E, X86 Inductor quantizer) of ``model`` calibrated on the
    batches of ``calibration`` (input tensors); returns the converted graph module."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    batch = {0: torch.export.Dim.AUTO}  # any batch size, not the example's
    exported = torch.export.export(model.eval(), (example_inputs,), dynamic_shapes=(batch,)).module()
    prepared = prepare_pt2e(exported, quantizer)
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
            seen += 1
    if not seen:
        raise ValueError("quantize: static int8 needs calibration batches (none were given)")
    converted = convert_pt2e(prepared)
    # Lightning and evaluation code call .eval() / .train(); an exported graph refuses them unless allowed (the
    # graph has no dropout or batch norm left that would change: batch norm is folded)
    allow_exported_model_train_eval(converted)
    return converted
