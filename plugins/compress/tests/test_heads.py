"""Structured pruning of attention heads and of transformers' feed-forward units. References are independent of
the code under test: the heads kept are those numpy ranks highest (per layer, or across layers after Michel et
al.'s per-layer L2 normalisation); the pruned model computes what the original computes with the removed heads'
columns of the output projection (or the removed units' columns of the down-projection) set to zero; Michel et
al.'s sensitivity equals central finite differences of each example's loss in a scale on the head's output, in
float64; a saved pruned model loads into a fresh one with the head counts restored; unknown layouts are one line."""

import argparse
import copy

import numpy as np
import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
pytest.importorskip("torch_pruning")

from aipflow_compress.command import compress_network  # noqa: E402
from aipflow_compress.heads import head_importance, prune_heads  # noqa: E402
from aipflow_compress.structured import load_pruned, prune_channels, save_pruned  # noqa: E402


def vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3, depth=3).eval()


def bert(seed: int = 0) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    return transformers.BertModel(config).eval()


def timm_head_l1(attention: nn.Module) -> np.ndarray:
    """Numpy: the L1 norm of each head's q, k, v rows (qkv rows are [q|k|v][head][dim]) and proj columns."""
    heads, dim = attention.num_heads, attention.head_dim
    qkv = attention.qkv.weight.detach().numpy().reshape(3, heads, dim, -1)
    proj = attention.proj.weight.detach().numpy().reshape(-1, heads, dim)
    return np.abs(qkv).sum(axis=(0, 2, 3)) + np.abs(proj).sum(axis=(0, 2))


def zero_removed_heads(model: nn.Module, report: dict, output_of) -> nn.Module:
    with torch.no_grad():
        for name, entry in report.items():
            output, dim = output_of(model, name)
            for head in set(range(entry["heads_before"])) - set(entry["kept"]):
                output.weight[:, head * dim : (head + 1) * dim] = 0
    return model


def timm_output(model, name):
    attention = model.get_submodule(name)
    return attention.proj, attention.head_dim


def bert_output(model, name):
    return model.get_submodule(name.rpartition(".")[0]).output.dense, model.get_submodule(name).attention_head_size


def test_vit_keeps_its_largest_heads_by_l1_and_computes_the_original_without_the_others(tmp_path):
    model, original = vit(), vit()
    x = torch.randn(4, 3, 32, 32)
    expected = {
        f"blocks.{i}.attn": np.sort(np.argsort(-timm_head_l1(original.blocks[i].attn), kind="stable")[:2])
        for i in range(3)
    }
    report = prune_heads(model, ratio=1 / 3, importance="l1")
    for name, kept in expected.items():
        assert report[name]["kept"] == kept.tolist()
        attention = model.get_submodule(name)
        assert attention.num_heads == 2 and attention.attn_dim == 128 and attention.qkv.out_features == 384
        assert attention.proj.in_features == 128
    reference = zero_removed_heads(original, report, timm_output)
    assert torch.allclose(model(x), reference(x), atol=1e-5)

    path = save_pruned(model, tmp_path / "heads.pt")
    fresh = load_pruned(vit(seed=1), path)
    assert fresh.blocks[0].attn.num_heads == 2
    assert torch.equal(fresh(x), model(x))


def test_bert_global_ranking_normalises_each_layer_and_keeps_one_head_per_layer():
    model, original = bert(), bert()
    ids = torch.randint(0, 50, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 6:] = 0
    # numpy: per head the L2 norm of its query/key/value rows and output columns; per layer / its L2 norm
    scores = {}
    for i, layer in enumerate(original.encoder.layer):
        parts = [
            getattr(layer.attention.self, p).weight.detach().numpy().reshape(4, 8, -1)
            for p in ("query", "key", "value")
        ]
        dense = layer.attention.output.dense.weight.detach().numpy().reshape(-1, 4, 8).transpose(1, 0, 2)
        squares = sum((w**2).reshape(4, -1).sum(1) for w in parts) + (dense**2).reshape(4, -1).sum(1)
        norms = np.sqrt(squares)
        scores[f"encoder.layer.{i}.attention.self"] = norms / np.linalg.norm(norms)
    candidates = sorted(
        (s[h], name, h) for name, s in scores.items() for h in np.argsort(s, kind="stable")[:-1]
    )  # each layer's best head is never removed
    removed = {(name, h) for _, name, h in candidates[:6]}  # round(0.5 * 12)
    report = prune_heads(model, ratio=0.5, importance="l2", global_pruning=True)
    for name, entry in report.items():
        assert entry["kept"] == [h for h in range(4) if (name, h) not in removed]
        assert model.get_submodule(name).num_attention_heads == len(entry["kept"]) >= 1
    reference = zero_removed_heads(original, report, bert_output)
    got = model(ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(got, reference(ids, attention_mask=mask).last_hidden_state, atol=1e-5)


def test_sensitivity_is_the_mean_absolute_derivative_of_each_examples_loss_by_finite_differences():
    model = vit().double()
    x, y = torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 2, 1])
    scores = head_importance(model, "sensitivity", batches=[(x[:2], y[:2]), (x[2:], y[2:])])
    step = 1e-5
    for block in (0, 2):
        proj = model.blocks[block].attn.proj
        for head in range(3):
            columns = slice(head * 64, (head + 1) * 64)
            derivatives = []
            for i in range(3):
                losses = []
                for sign in (1, -1):
                    probe = copy.deepcopy(model)
                    with torch.no_grad():  # a gate of 1 + sign * step on the head's output = its columns scaled
                        probe.blocks[block].attn.proj.weight[:, columns] *= 1 + sign * step
                    losses.append(nn.functional.cross_entropy(probe(x[i : i + 1]), y[i : i + 1]).item())
                derivatives.append(abs(losses[0] - losses[1]) / (2 * step))
            assert scores[f"blocks.{block}.attn"][head].item() == pytest.approx(np.mean(derivatives), rel=1e-5)
        assert proj.weight.shape == (192, 192)


def test_transformers_lose_feed_forward_units_only_and_exactly():
    model, original = vit(), vit()
    x = torch.randn(2, 3, 32, 32)
    prune_channels(model, x[:1], ratio=0.5, importance="l1")
    changed = {n for n, p in model.named_parameters() if p.shape != original.get_parameter(n).shape}
    assert changed == {f"blocks.{i}.mlp.{p}" for i in range(3) for p in ("fc1.weight", "fc1.bias", "fc2.weight")}
    with torch.no_grad():  # the original with the removed hidden units' down-projection columns at zero
        for i in range(3):
            fc1 = original.blocks[i].mlp.fc1.weight
            kept = np.sort(np.argsort(-fc1.abs().sum(1).numpy(), kind="stable")[:384])
            assert torch.equal(model.blocks[i].mlp.fc1.weight, fc1[kept])
            removed = [c for c in range(768) if c not in set(kept)]
            original.blocks[i].mlp.fc2.weight[:, removed] = 0
    assert torch.allclose(model(x), original(x), atol=1e-5)

    text = bert()
    ids = torch.randint(0, 50, (2, 10))
    report = prune_channels(text, {"input_ids": ids}, ratio=0.25)
    assert text.encoder.layer[0].intermediate.dense.out_features == 48 and report["macs_after"] < report["macs_before"]
    assert text.encoder.layer[0].attention.self.query.out_features == 32


def test_the_command_prunes_heads():
    options = argparse.Namespace(ratio=0.34, importance="l1", scope="layer")
    network, settings = compress_network(vit(), "heads", options, torch.randn(2, 3, 32, 32))
    assert settings == "ratio 0.34 (l1, layer)" and [b.attn.num_heads for b in network.blocks] == [2, 2, 2]


class MultiheadBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attention(x, x, x)[0].mean(1))


def test_unknown_layouts_and_bad_settings_are_one_line():
    with pytest.raises(ValueError, match=r"prune_heads: attention \(MultiheadAttention\) is an attention layout"):
        prune_heads(MultiheadBlock(), 0.5)
    with pytest.raises(ValueError, match=r"structured pruning of MultiheadBlock: an attention model without"):
        prune_channels(MultiheadBlock(), torch.randn(1, 4, 8), 0.5)
    gated = vit()
    gated.blocks[0].attn.gate = nn.Linear(192, 3)
    with pytest.raises(ValueError, match=r"prune_heads: blocks.0.attn \(Attention\) has a gate or a norm"):
        prune_heads(gated, 0.5)
    with pytest.raises(ValueError, match=r"prune_heads.ratio must lie in \[0, 1\), got 1.0"):
        prune_heads(vit(), 1.0)
    with pytest.raises(ValueError, match="prune_heads.importance must be one of"):
        prune_heads(vit(), 0.5, importance="taylor")
    with pytest.raises(ValueError, match="importance='sensitivity' needs batches"):
        prune_heads(vit(), 0.5, importance="sensitivity")
    model = vit()
    model.blocks[0].attn.qkv = nn.Sequential(model.blocks[0].attn.qkv)  # as an adapter wrapper would
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv is Sequential, not a plain Linear"):
        prune_heads(model, 0.5)
