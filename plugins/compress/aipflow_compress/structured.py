"""Structured channel pruning through ``torch-pruning`` (Fang et al., "DepGraph: Towards Any Structural Pruning",
CVPR 2023): whole output channels of convolutions (and output features of Linear layers) are removed together
with everything that depends on them (the batch norm after, the next layer's input channels, residual branches
that must stay aligned), so the network gets smaller and faster, not just sparser.

Channels are ranked by the L1 norm of their filters (``l1``, Li et al., "Pruning Filters for Efficient ConvNets",
ICLR 2017: the default), the L2 norm (``l2``) or the batch-norm scale that follows (``bn_scale``, Liu et al.,
"Network Slimming", ICCV 2017), per layer or globally. The classifier (the last Linear layer) keeps its outputs.

In a transformer (a model with attention modules), the channels pruned here are the hidden units of the
feed-forward blocks (timm's ``mlp.fc1``, BERT's ``intermediate.dense``: the up-projection's rows and the
down-projection's columns, exact); the residual width and the attention projections are kept. Whole attention
heads go with :func:`aipflow_compress.heads.prune_heads`, which updates the modules' head counts.

A pruned model's architecture differs from the one its config builds. :func:`save_pruned` writes its state dict
(tensors only: loads with ``weights_only=True``); :func:`load_pruned` shrinks a freshly built model's layers to
the saved shapes, then loads it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

__all__ = ["IMPORTANCES", "load_pruned", "prune_channels", "save_pruned"]

IMPORTANCES = ("l1", "l2", "bn_scale")
_ATTENTION_ATTRIBUTES = ("num_heads", "num_attention_heads")
_FEED_FORWARD_UP = re.compile(r"(^|\.)(mlp\.fc1|intermediate\.dense)$")  # timm Mlp, BERT-family intermediate


def _importance(name: str):
    import torch_pruning as tp

    if name in ("l1", "l2"):  # the norm of the layer's own filters (group_reduction "first"), as Li et al. rank
        return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2, group_reduction="first")
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise ValueError(f"structured.importance must be one of {IMPORTANCES}, got {name!r}")


def count_macs_and_params(model: nn.Module, example_inputs: torch.Tensor | dict) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass on ``example_inputs`` and the parameter count (torch-pruning's
    counter)."""
    import torch_pruning as tp

    was_training = model.training
    macs, params = tp.utils.count_ops_and_params(model.eval(), example_inputs)
    model.train(was_training)
    return int(macs), int(params)


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor | dict[str, torch.Tensor],
    ratio: float = 0.5,
    importance: str = "l1",
    global_pruning: bool = False,
    keep: str | None = None,
    round_to: int | None = None,
) -> dict[str, float]:
    """Remove ``ratio`` of the channels of ``model``'s convolutions and Linear layers in place (per layer, or by
    one global ranking), keeping the last Linear layer's outputs (the classes) and the layers whose names match
    ``keep`` (a regular expression); ``round_to`` rounds channel counts to a multiple (e.g. 8 for fast kernels).
    In a transformer only the feed-forward hidden units are pruned (see the module's text). ``example_inputs``: a
    batch, or keyword inputs (a transformers model's ``input_ids``, ...). Returns MACs and parameters before and
    after."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"structured.ratio must lie in [0, 1), got {ratio}")
    scorer = _importance(importance)
    transformer = any(isinstance(getattr(m, a, None), int) for m in model.modules() for a in _ATTENTION_ATTRIBUTES)
    prunable = (nn.Linear, nn.modules.conv._ConvNd)
    ignored: list[nn.Module] = []
    if transformer:
        ignored += [
            m for name, m in model.named_modules() if isinstance(m, prunable) and not _FEED_FORWARD_UP.search(name)
        ]
        if len(ignored) == sum(isinstance(m, prunable) for m in model.modules()):
            raise ValueError(
                f"structured pruning of {type(model).__name__}: an attention model without feed-forward layers this "
                "version knows (timm mlp.fc1, BERT intermediate.dense); prune its heads with prune_heads"
            )
    import torch_pruning as tp

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ignored += [linears[-1]] if linears else []
    if keep is not None:
        ignored += [m for name, m in model.named_modules() if name and re.search(keep, name)]
    macs, params = count_macs_and_params(model, example_inputs)
    was_training = model.training
    pruner = tp.pruner.MagnitudePruner(
        model.eval(),
        example_inputs,
        importance=scorer,
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=ignored,
        round_to=round_to,
    )
    pruner.step()
    model.train(was_training)
    macs_after, params_after = count_macs_and_params(model, example_inputs)
    return {"macs_before": macs, "macs_after": macs_after, "params_before": params, "params_after": params_after}


def save_pruned(model: nn.Module, path: str | Path) -> Path:
    """The pruned model's state dict (tensors only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@torch.no_grad()
def load_pruned(model: nn.Module, path: str | Path) -> nn.Module:
    """Shrink ``model`` (built as before pruning) to the shapes saved in ``path`` and load it
    (``weights_only=True``). Convolutions, Linear layers and batch / layer / group norms are resized, and the head
    counts of attention modules whose heads :func:`~aipflow_compress.heads.prune_heads` removed follow."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        saved = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and "." not in k[len(prefix) :]}
        if "weight" in saved and saved["weight"].shape != getattr(module, "weight", torch.empty(0)).shape:
            _resize(module, saved, name)
    from aipflow_compress.heads import match_head_counts

    match_head_counts(model)  # attention heads removed by prune_heads: the modules' head counts follow the shapes
    model.load_state_dict(state)
    return model


def _resize(module: nn.Module, saved: dict[str, torch.Tensor], name: str) -> None:
    shape = saved["weight"].shape
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups == module.in_channels and module.groups > 1
        module.out_channels = shape[0]
        module.groups = shape[0] if depthwise else module.groups
        module.in_channels = shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape[0], shape[1]
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(shape)
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = shape[0]
    else:
        raise ValueError(f"load_pruned: cannot resize {name} ({type(module).__name__}) to {tuple(shape)}")
    for key, value in saved.items():
        if key in module._parameters and module._parameters[key] is not None:
            module._parameters[key] = nn.Parameter(torch.empty_like(value), module._parameters[key].requires_grad)
        elif key in module._buffers and module._buffers[key] is not None:
            module._buffers[key] = torch.empty_like(value)
