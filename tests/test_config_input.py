"""Bad configs get one clear line before any data is read; nested config files resolve relative to the file that
includes them; rewriting a config writes no temporary file."""

import tempfile
from pathlib import Path

import pytest
import yaml

from aipflow.cli import main
from aipflow.config import resolve_recipe


def run(args, capsys):
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("(add --debug"), err
    return lines[0]


def recipe_with(tmp_path, old, new, recipe="sgd", name="edited.yaml"):
    text = resolve_recipe(recipe).read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return str(path)


@pytest.fixture
def no_data_setup(monkeypatch):
    """Fails the test if a data module is set up: these errors must come before any data is read."""
    from aipflow.data import DigitsDataModule

    def refuse(self, stage=None):
        raise AssertionError("the data module was set up before the config error was reported")

    monkeypatch.setattr(DigitsDataModule, "setup", refuse)


def test_misspelt_key_inside_a_component_suggests_the_right_one(tmp_path, capsys):
    path = recipe_with(tmp_path, "    optimizer:", "    optimiser:")
    line = one_line_error(*run(["fit", "--config", path], capsys)[::2])
    assert line == (
        "aipflow: error: model.init_args.optimiser: ClassificationTask takes no option 'optimiser'; "
        "did you mean model.init_args.optimizer?"
    )


def test_misspelt_top_level_key_suggests_the_right_one(tmp_path, capsys):
    path = recipe_with(tmp_path, "trainer:", "trainr:")
    code, _, err = run(["fit", "--config", path], capsys)
    assert code == 2 and "trainr" in err and "did you mean trainer?" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "option, field",
    [
        ("--model.init_args.optimizer.init_args.lr=-1", "model.init_args.optimizer.init_args.lr: "),
        ("--model.init_args.optimizer.init_args.momentum=-0.5", "model.init_args.optimizer.init_args.momentum: "),
    ],
)
def test_optimizer_range_errors_name_the_field_before_data(option, field, no_data_setup, capsys):
    line = one_line_error(*run(["fit", "--config", "sgd", option], capsys)[::2])
    assert line.startswith(f"aipflow: error: {field}")


def test_sam_rho_error_names_the_field_before_data(no_data_setup, capsys):
    line = one_line_error(*run(["fit", "--config", "sam", "--model.init_args.optimizer.init_args.rho=-1"], capsys)[::2])
    assert line == "aipflow: error: model.init_args.optimizer.init_args.rho: rho must be > 0, got -1.0"


def test_posterior_samples_without_a_bayesian_optimizer_is_refused(no_data_setup, capsys):
    line = one_line_error(*run(["fit", "--config", "sgd", "--model.init_args.posterior_samples=4"], capsys)[::2])
    assert line.startswith("aipflow: error: model.init_args.posterior_samples: 4 needs a Bayesian optimizer")
    assert "the optimizer is SGD" in line


def test_nested_config_files_resolve_relative_to_the_including_file(tmp_path, monkeypatch, capsys):
    # data.yaml beside the recipe, in a folder other than the working directory, using short names
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "data.yaml").write_text(
        yaml.safe_dump({"class_path": "DigitsDataModule", "init_args": {"batch_size": 17, "noise_rate": 0.3}})
    )
    task = {"class_path": "ClassificationTask", "init_args": {"model": {"class_path": "MLP"}, "loss": "GCE"}}
    (folder / "model.yaml").write_text(yaml.safe_dump(task))
    (folder / "run.yaml").write_text(yaml.safe_dump({"model": "model.yaml", "data": "data.yaml"}))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["fit", "--config", str(folder / "run.yaml"), "--print_config"], capsys)
    assert code == 0, err
    config = yaml.safe_load(out)
    assert config["data"]["class_path"].endswith("DigitsDataModule")
    # (an included file written with the earlier flat noise option: read as the settings object's field)
    assert config["data"]["init_args"]["batch_size"] == 17 and config["data"]["init_args"]["label_noise"]["rate"] == 0.3
    assert config["model"]["init_args"]["loss"]["class_path"].endswith("losses.robust.GCE")
    (folder / "run.yaml").write_text(yaml.safe_dump({"data": "nothere.yaml"}))
    line = one_line_error(*run(["fit", "--config", str(folder / "run.yaml")], capsys)[::2])
    assert line == f"aipflow: error: data: 'nothere.yaml': no such file (read relative to {folder})"


@pytest.mark.parametrize("bad", [None, "optimizer-typo", "lr"])
def test_config_rewriting_leaves_no_temporary_file(bad, tmp_path, monkeypatch, capsys):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", "sgd", "--print_config"]
    if bad == "optimizer-typo":
        args = ["fit", "--config", recipe_with(tmp_path, "    optimizer:", "    optimiser:")]
    elif bad == "lr":
        args = ["fit", "--config", "sgd", "--model.init_args.optimizer.init_args.lr=-1"]
    code, _, _ = run(args, capsys)
    assert (code == 0) == (bad is None)
    assert not list(scratch.iterdir())  # nothing written, so nothing a kill -9 could leave behind
    assert not list(Path(tmp_path).glob("aipflow-*"))


def test_a_swapped_model_takes_its_sizes_from_the_data_and_a_contradicting_size_is_one_line(
    tmp_path, monkeypatch, capsys, caplog
):
    # the recipe's SmallCNN swapped for MLP, whose default in_features is digits' 64: on a 13-feature table it used
    # to stay and fail at the first batch ("mat1 and mat2 shapes cannot be multiplied")
    import logging

    from aipflow.data.examples import write_table

    monkeypatch.chdir(tmp_path)
    write_table("wine", tmp_path / "wine.csv")
    argv = ["fit", "--config", "sgd", "--data=HFDataModule", f"--data.source={tmp_path / 'wine.csv'}"]
    argv += ["--model.init_args.model=MLP", "--trainer.fast_dev_run=1", "--trainer.logger=false"]
    argv += ["--trainer.enable_progress_bar=false", "--test_after_fit=false"]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert "model.model.in_features=13 (MLP's default 64 does not fit the data)" in caplog.text
    assert "model.model.num_classes=3" in caplog.text  # the recipe's null, carried over to the new class
    assert main([*argv, "--model.init_args.model.init_args.in_features=null"]) == 0  # null: the data's, explicitly
    capsys.readouterr()
    assert main([*argv, "--model.init_args.model.init_args.in_features=100"]) == 2
    err = capsys.readouterr().err
    assert (
        "model.model.in_features=100 contradicts the data, which gives 13 (the number of input values (features, or "
        "channels x height x width)); leave it out, or null, to take the data's" in err
    )
    assert "Traceback" not in err and err.count("\n") == 2  # the line, and how to see the traceback
