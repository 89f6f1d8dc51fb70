"""Structured pruning of attention heads: whole heads leave a multi-head self-attention (their query, key and value
rows and their columns of the output projection), and the module's head count is updated, so it computes exactly
what it computed before with those heads' outputs set to zero, only smaller and faster (Michel, Levy & Neubig,
"Are Sixteen Heads Really Better than One?", NeurIPS 2019).

Two layouts are understood, found by their attributes (no import of timm or transformers):

- timm's ``Attention`` (ViT, DeiT, ...): a fused ``qkv`` Linear with rows laid out ``[q|k|v][head][dim]``,
  ``proj``, ``num_heads`` / ``head_dim`` / ``attn_dim``; gated or scale-normed variants are refused (their gate and
  norm span all heads);
- BERT-family self-attention (transformers' BERT, RoBERTa, MiniLM, ...): ``query`` / ``key`` / ``value`` Linears,
  ``num_attention_heads`` / ``attention_head_size`` / ``all_head_size``; the output projection is the sibling
  ``output.dense`` of the parent module.

Any other module with a head count (``num_heads`` / ``num_attention_heads``) is refused in one line, as are
adapter-wrapped projections (LoRA: merge first).

Importance of a head:

- ``l1`` / ``l2`` (default ``l1``): the norm of all its weights (its q, k, v rows and its output-projection
  columns), a data-free magnitude criterion;
- ``sensitivity``: Michel et al.'s proxy score I_h = E_x |dL(x)/d xi_h|, the expected absolute effect on the loss
  of a gate xi_h = 1 on the head's output, from ``batches`` and ``loss`` (the network in eval mode); for a global
  ranking, normalised per layer by its L2 norm as they do.

``ratio`` of the heads goes: in each layer (``round(ratio * heads)``), or by one ranking across layers
(``global_pruning``); every layer keeps at least one head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["HEAD_IMPORTANCES", "attention_heads", "head_importance", "match_head_counts", "prune_heads"]

HEAD_IMPORTANCES = ("l1", "l2", "sensitivity")
_HEAD_COUNT_ATTRIBUTES = ("num_heads", "num_attention_heads")


@dataclass
class _Attention:
    """One self-attention module's heads: the Linears whose rows are ``[block][head][dim]`` (``blocks`` = 3 for a
    fused qkv) and the output projection whose columns are ``[head][dim]``."""

    name: str
    module: nn.Module
    inputs: list[nn.Linear]
    blocks: int
    output: nn.Linear
    heads: int
    head_dim: int

    def rows(self, heads: torch.Tensor) -> torch.Tensor:
        dims = (heads[:, None] * self.head_dim + torch.arange(self.head_dim)).flatten()
        return torch.cat([block * self.heads * self.head_dim + dims for block in range(self.blocks)])

    def columns(self, heads: torch.Tensor) -> torch.Tensor:
        return (heads[:, None] * self.head_dim + torch.arange(self.head_dim)).flatten()

    def set_heads(self, heads: int) -> None:
        if hasattr(self.module, "qkv"):  # timm
            self.module.num_heads = heads
            self.module.attn_dim = heads * self.head_dim
        else:  # BERT family
            self.module.num_attention_heads = heads
            self.module.all_head_size = heads * self.head_dim
        self.heads = heads


def _plain_linear(module: Any, where: str) -> nn.Linear:
    if type(module) is not nn.Linear:
        raise ValueError(
            f"prune_heads: {where} is {type(module).__name__}, not a plain Linear (merge adapters such as LoRA "
            "before pruning heads)"
        )
    return module


def attention_heads(model: nn.Module) -> list[_Attention]:
    """The self-attention modules of ``model`` whose heads can be pruned; one line for one that cannot."""
    found = []
    for name, module in model.named_modules():
        if not any(isinstance(getattr(module, a, None), int) for a in _HEAD_COUNT_ATTRIBUTES):
            continue
        kind = type(module).__name__
        if hasattr(module, "qkv") and hasattr(module, "proj") and isinstance(getattr(module, "head_dim", None), int):
            if getattr(module, "gate", None) is not None or not isinstance(getattr(module, "norm", None), nn.Identity):
                raise ValueError(
                    f"prune_heads: {name} ({kind}) has a gate or a norm across all heads; heads cannot be removed "
                    "from it exactly"
                )
            qkv = _plain_linear(module.qkv, f"{name}.qkv")
            proj = _plain_linear(module.proj, f"{name}.proj")
            found.append(_Attention(name, module, [qkv], 3, proj, module.num_heads, module.head_dim))
        elif all(hasattr(module, p) for p in ("query", "key", "value")) and hasattr(module, "attention_head_size"):
            parent_name = name.rpartition(".")[0]
            parent = model.get_submodule(parent_name) if parent_name else model
            dense = getattr(getattr(parent, "output", None), "dense", None)
            if dense is None:
                raise ValueError(f"prune_heads: {name} ({kind}) has no output projection at {parent_name}.output.dense")
            inputs = [_plain_linear(getattr(module, p), f"{name}.{p}") for p in ("query", "key", "value")]
            output = _plain_linear(dense, f"{parent_name}.output.dense")
            found.append(
                _Attention(name, module, inputs, 1, output, module.num_attention_heads, module.attention_head_size)
            )
        else:
            raise ValueError(
                f"prune_heads: {name} ({kind}) is an attention layout this version does not know (timm Attention "
                "with a fused qkv, or BERT-style query/key/value); leave it out or prune it unstructured"
            )
    return found


def match_head_counts(model: nn.Module) -> int:
    """Set each known attention module's head count from its (resized) projections, as after
    :func:`prune_heads`; used when a pruned state dict is loaded into a freshly built model. Returns how many
    modules changed; unknown layouts are left alone."""
    changed = 0
    for module in model.modules():
        if isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int):
            heads = module.qkv.out_features // (3 * module.head_dim)
            if heads != module.num_heads:
                module.num_heads, module.attn_dim, changed = heads, heads * module.head_dim, changed + 1
        elif isinstance(getattr(module, "query", None), nn.Linear) and hasattr(module, "attention_head_size"):
            heads = module.query.out_features // module.attention_head_size
            if heads != module.num_attention_heads:
                module.num_attention_heads, changed = heads, changed + 1
                module.all_head_size = heads * module.attention_head_size
    return changed


def _magnitude(attention: _Attention, p: int) -> torch.Tensor:
    scores = []
    for head in range(attention.heads):
        index = torch.tensor([head])
        rows = attention.rows(index)
        parts = [layer.weight[rows] for layer in attention.inputs] + [
            attention.output.weight[:, attention.columns(index)]
        ]
        flat = torch.cat([w.detach().float().flatten() for w in parts])
        scores.append(flat.abs().sum() if p == 1 else flat.pow(2).sum().sqrt())
    return torch.stack(scores)


def _default_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        x, y = batch["x"], batch["y"]
    else:
        x, y = batch[0], batch[1]
    return nn.functional.cross_entropy(model(x), y)


def _sensitivity(
    model: nn.Module,
    attentions: list[_Attention],
    batches: Iterable[Any],
    loss: Callable[[nn.Module, Any], torch.Tensor],
) -> list[torch.Tensor]:
    """Michel et al.'s I_h: per example |dL/d xi_h| for a gate on each head's output (one gate per example and
    head, so a batch-mean loss gives each example's derivative, divided by the batch size), averaged."""
    gates: dict[int, torch.Tensor] = {}

    def gate_hook(index: int, attention: _Attention):
        def hook(_module, args):
            x = args[0]
            gate = torch.ones(x.shape[0], attention.heads, dtype=x.dtype, device=x.device, requires_grad=True)
            gates[index] = gate
            shaped = x.unflatten(-1, (attention.heads, attention.head_dim))
            gate_view = gate.view(x.shape[0], *([1] * (x.dim() - 2)), attention.heads, 1)
            return ((shaped * gate_view).flatten(-2), *args[1:])

        return hook

    handles = [a.output.register_forward_pre_hook(gate_hook(i, a)) for i, a in enumerate(attentions)]
    totals = [torch.zeros(a.heads, dtype=torch.float64) for a in attentions]
    examples = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            gates.clear()
            value = loss(model, batch)
            size = next(iter(gates.values())).shape[0] if gates else 0
            grads = torch.autograd.grad(value, [gates[i] for i in range(len(attentions))], allow_unused=True)
            for i, grad in enumerate(grads):
                if grad is not None:  # dL/d xi_bh of the mean loss is dL_b/d xi_bh / B
                    totals[i] += (grad.detach().double() * size).abs().sum(0)
            examples += size
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if examples == 0:
        raise ValueError("prune_heads: importance='sensitivity' got no batches")
    return [total / examples for total in totals]


def head_importance(
    model: nn.Module,
    importance: str = "l1",
    batches: Iterable[Any] | None = None,
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Each prunable attention module's head scores (higher: more important), by module name."""
    if importance not in HEAD_IMPORTANCES:
        raise ValueError(f"prune_heads.importance must be one of {HEAD_IMPORTANCES}, got {importance!r}")
    attentions = attention_heads(model)
    if not attentions:
        raise ValueError(f"prune_heads: {type(model).__name__} has no attention module with heads")
    if importance == "sensitivity":
        if batches is None:
            raise ValueError("prune_heads: importance='sensitivity' needs batches (and a loss, default cross-entropy)")
        scores = _sensitivity(model, attentions, batches, loss or _default_loss)
    else:
        scores = [_magnitude(a, 1 if importance == "l1" else 2) for a in attentions]
    return {a.name: s for a, s in zip(attentions, scores, strict=True)}


def _cut(layer: nn.Linear, index: torch.Tensor, dim: int) -> None:
    weight = layer.weight.detach().index_select(dim, index.to(layer.weight.device)).clone()
    layer.weight = nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
    if dim == 0:
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.detach()[index].clone(), requires_grad=layer.bias.requires_grad)
        layer.out_features = weight.shape[0]
    else:
        layer.in_features = weight.shape[1]


@torch.no_grad()
def _remove(attention: _Attention, keep: torch.Tensor) -> None:
    rows, columns = attention.rows(keep), attention.columns(keep)
    for layer in attention.inputs:
        _cut(layer, rows, 0)
    _cut(attention.output, columns, 1)
    attention.set_heads(len(keep))


def prune_heads(
    model: nn.Module,
    ratio: float = 0.5,
    importance: str = "l1",
    global_pruning: bool = False,
    batches: Iterable[Any] | None = None,
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """Remove ``ratio`` of the attention heads of ``model`` in place (the lowest scored; see the module's text).
    ``loss(model, batch)`` (default: cross-entropy of ``model(x)`` on ``y``) and ``batches`` serve
    ``importance='sensitivity'``. Returns per module: heads before, kept head indices (of the original order)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune_heads.ratio must lie in [0, 1), got {ratio}")
    scores = head_importance(model, importance, batches, loss)
    attentions = {a.name: a for a in attention_heads(model)}
    if global_pruning:
        # Michel et al. normalise each layer's scores by their L2 norm before one ranking across layers
        normalised = {n: s.double() / s.double().norm().clamp_min(1e-30) for n, s in scores.items()}
        total = sum(a.heads for a in attentions.values())
        removals = _global_removals(normalised, round(ratio * total))
    else:
        removals = {n: min(round(ratio * a.heads), a.heads - 1) for n, a in attentions.items()}
    report = {}
    for name, attention in attentions.items():
        order = torch.argsort(scores[name].double(), descending=True, stable=True)
        keep = order[: attention.heads - removals[name]].sort().values
        report[name] = {"heads_before": attention.heads, "kept": keep.tolist()}
        if len(keep) < attention.heads:
            _remove(attention, keep)
    return report


def _global_removals(scores: dict[str, torch.Tensor], count: int) -> dict[str, int]:
    """How many heads each layer loses when the ``count`` lowest across layers go, each layer keeping its best."""
    candidates = []
    for name, s in scores.items():
        order = torch.argsort(s, stable=True)  # ascending; the layer's best head is never a candidate
        candidates += [(float(s[i]), name) for i in order[:-1]]
    candidates.sort(key=lambda item: item[0])
    removals = dict.fromkeys(scores, 0)
    for _, name in candidates[:count]:
        removals[name] += 1
    return removals
