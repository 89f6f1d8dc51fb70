"""A bad ``--ckpt_path`` gets one line naming the file and what is wrong: exit 2, no traceback."""

import shutil

import pytest
import torch

from aipflow.cli import main

TINY = [
    "--trainer.logger=false",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]


@pytest.fixture(scope="module")
def sgd_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("sgd")
    assert main(["fit", "--config", "sgd", f"--trainer.default_root_dir={root}", *TINY]) == 0
    return root / "checkpoints" / "last.ckpt"


def fit_from(recipe, ckpt, tmp_path, capsys):
    capsys.readouterr()
    code = main(["fit", "--config", recipe, f"--trainer.default_root_dir={tmp_path}", *TINY, f"--ckpt_path={ckpt}"])
    err = capsys.readouterr().err
    return code, err


def bad_files(tmp_path, good):
    data = good.read_bytes()
    cases = {
        "empty": (b"", "the file is empty (0 bytes)"),
        "garbage": (bytes(range(7, 200)), "not a PyTorch checkpoint"),
        "truncated": (data[: len(data) // 2], "the file is truncated"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / f"{name}.ckpt").write_bytes(content)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights_only.ckpt")
    return {**{k: v[1] for k, v in cases.items()}, "weights_only": "not a Lightning checkpoint"}


def assert_one_clear_line(code, err, path, expected):
    assert code == 2, err
    first = err.splitlines()[0]
    assert first.startswith(f"aipflow: error: --ckpt_path {path}: ") and expected in first, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 2  # the message and the --debug hint


def test_unreadable_files(sgd_checkpoint, tmp_path, capsys):
    for name, expected in bad_files(tmp_path, sgd_checkpoint).items():
        path = tmp_path / f"{name}.ckpt"
        assert_one_clear_line(*fit_from("sgd", path, tmp_path, capsys), path, expected)
    missing = tmp_path / "nothere.ckpt"
    assert_one_clear_line(*fit_from("sgd", missing, tmp_path, capsys), missing, "no such file")


def test_checkpoint_of_another_model(sgd_checkpoint, tmp_path, capsys):
    # sgd trains the SmallCNN; noisy_ce an MLP
    code, err = fit_from("noisy_ce", sgd_checkpoint, tmp_path, capsys)
    assert_one_clear_line(code, err, sgd_checkpoint, "holds another model: ")
    assert "'model.features.0.0.weight'" in err


@pytest.mark.parametrize("recipe", ["sam", "adamw"])
def test_checkpoint_of_another_optimizer(recipe, sgd_checkpoint, tmp_path, capsys):
    code, err = fit_from(recipe, sgd_checkpoint, tmp_path, capsys)
    assert_one_clear_line(code, err, sgd_checkpoint, "holds another optimizer's state (saved: SGD)")


def test_a_good_checkpoint_still_resumes(sgd_checkpoint, tmp_path, capsys):
    copy = tmp_path / "copy.ckpt"
    shutil.copy(sgd_checkpoint, copy)
    capsys.readouterr()
    argv = ["fit", "--config", "sgd", f"--trainer.default_root_dir={tmp_path}", *TINY, f"--ckpt_path={copy}"]
    assert main([a if a != "--trainer.max_epochs=1" else "--trainer.max_epochs=2" for a in argv]) == 0
