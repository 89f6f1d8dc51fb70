"""``aipflow predict --config R --ckpt_path C`` writes one row per input with the checkpoint's predictions."""

import numpy as np
import pandas as pd
import pytest
import torch

from aipflow.cli import main

TINY = [
    "--trainer.logger=false",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def fit_and_predict(recipe, root, *predict_args):
    assert main(["fit", "--config", recipe, f"--trainer.default_root_dir={root}", "--test_after_fit=false", *TINY]) == 0
    ckpt = root / "checkpoints" / "last.ckpt"
    out = root / "predictions.csv"
    argv = ["predict", "--config", recipe, f"--ckpt_path={ckpt}", f"--predictions_file={out}", *TINY, *predict_args]
    argv.append(f"--trainer.default_root_dir={root}")  # LightningCLI saves its config.yaml there, not in the cwd
    assert main(argv) == 0
    return ckpt, pd.read_csv(out)


def split_probabilities(ckpt):
    """The test split's softmax from the checkpoint's weights, computed here without the task or the CLI."""
    from aipflow.data import DigitsDataModule
    from aipflow.models import SmallCNN

    net = SmallCNN(num_classes=10)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    dm = DigitsDataModule()
    dm.setup()
    with torch.no_grad():
        return net.eval()(dm.test_set.x).softmax(1).numpy(), dm


@pytest.mark.parametrize("recipe, bayesian", [("quickstart", True), ("bsam", True), ("sgd", False)])
def test_predictions_of_the_test_split(recipe, bayesian, tmp_path, capsys):
    ckpt, table = fit_and_predict(recipe, tmp_path)
    assert f"360 rows written to {tmp_path / 'predictions.csv'}" in capsys.readouterr().out
    probs, dm = split_probabilities(ckpt)
    assert list(table["index"]) == list(range(360))
    assert np.array_equal(table["label"].to_numpy(), dm.test_set.y.numpy())
    ours = table[[f"prob_{k}" for k in range(10)]].to_numpy()
    assert np.allclose(ours, probs, atol=1e-6)
    assert np.array_equal(table["predicted"].to_numpy(), probs.argmax(1))
    if bayesian:  # the posterior predictive: a distribution, its argmax and its entropy
        pp = table[[f"pp_prob_{k}" for k in range(10)]].to_numpy()
        assert np.allclose(pp.sum(1), 1, atol=1e-5) and not np.allclose(pp, ours, atol=1e-4)
        assert np.array_equal(table["pp_predicted"].to_numpy(), pp.argmax(1))
        entropy = -(pp * np.log(np.clip(pp, 1e-30, None))).sum(1)
        assert np.allclose(table["pp_entropy"].to_numpy(), entropy, atol=1e-5)
    else:
        assert "pp_entropy" not in table


def test_predictions_of_a_user_file_equal_those_of_the_same_images(tmp_path, capsys):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    # the test split's raw images (0-16 scale), found the way the data module splits
    digits = load_digits()
    idx = np.arange(len(digits.target))
    _, test_idx = train_test_split(idx, test_size=0.2, stratify=digits.target, random_state=0)
    raw = digits.images[test_idx[:25]].reshape(25, 64)
    csv = tmp_path / "mine.csv"
    pd.DataFrame(raw, columns=[f"pixel{i}" for i in range(64)]).to_csv(csv, index=False)
    ckpt, table = fit_and_predict("sgd", tmp_path, f"--data.init_args.predict_file={csv}")
    probs, _ = split_probabilities(ckpt)
    assert len(table) == 25 and (table["label"] == -1).all()
    assert np.allclose(table[[f"prob_{k}" for k in range(10)]].to_numpy(), probs[:25], atol=1e-5)


def test_weaksup_predictions(tmp_path):
    pytest.importorskip("aipflow_weaksup")
    from aipflow_weaksup.data import PUDigitsDataModule

    from aipflow.models import SmallCNN

    ckpt, table = fit_and_predict("weaksup/pu_nnpu", tmp_path)
    assert {"index", "label", "score", "prob_positive", "predicted"} <= set(table.columns)
    # the scores are the checkpoint's network applied here, without the task or the command, to the test rows
    net = SmallCNN(num_classes=1, width=32)  # the recipe's network
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    dm = PUDigitsDataModule(n_labeled=100, batch_size=128)
    dm.setup()
    assert list(table["index"]) == list(range(len(dm.test_set)))
    with torch.no_grad():
        scores = net.eval()(dm.test_set.x).squeeze(1).numpy()
    assert np.allclose(table["score"], scores, atol=1e-5)
    assert np.array_equal(table["label"].to_numpy(), dm.test_set.y.numpy())
    assert np.array_equal(table["predicted"].to_numpy(), np.where(scores > 0, 1, -1))  # the sign of the score
    assert len(set(table["predicted"])) == 2  # both classes occur: the sign check is not vacuous
    assert np.allclose(table["prob_positive"], 1 / (1 + np.exp(-scores)), atol=1e-6)
