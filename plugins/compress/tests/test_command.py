"""``aipflow compress`` on a trained digits run: the installed script prunes it and writes the model (loads with
``weights_only=True``), a report with the measurements and a CSV row per run with a Pareto plot; a second method
adds to the CSV; bad input is one line."""

import csv
import os
import subprocess

import pytest
import torch

from aipflow.cli import main
from aipflow.testing import fit_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    assert fit_recipe("sgd", root, "--trainer.max_steps=-1", "--trainer.max_epochs=2") == 0
    return root / "checkpoints" / "last.ckpt"


def test_the_command_prunes_a_run_and_reports(trained, tmp_path):
    out = tmp_path / "reports" / "prune"
    command = ["aipflow", "compress", "--config", "sgd", "--ckpt_path", str(trained), "--method", "prune"]
    command += ["--sparsity", "0.5", "--scope", "layer", "--repeats", "2", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "AIPFLOW_DEBUG": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "aipflow compress: prune (sparsity 0.5 (layer)): test acc" in done.stdout
    state = torch.load(out / "model.pt", weights_only=True)
    conv = state["features.1.0.weight"]
    assert int((conv == 0).sum()) == round(0.5 * conv.numel())
    rows = list(csv.DictReader((tmp_path / "reports" / "report.csv").open()))
    assert [r["method"] for r in rows] == ["none", "prune"]
    assert int(rows[1]["nonzero"]) < 0.55 * int(rows[0]["nonzero"])
    assert float(rows[1]["latency_32_ms"]) > 0 and 0 < float(rows[1]["test_acc"]) <= 1
    assert "| prune | sparsity 0.5 (layer) |" in (out / "report.md").read_text()
    assert (tmp_path / "reports" / "pareto.png").stat().st_size > 0

    quantized = tmp_path / "reports" / "tucker"
    argv = ["compress", "--config", "sgd", "--ckpt_path", str(trained), "--method", "tucker", "--ratio", "0.5"]
    assert main([*argv, "--repeats", "1", "--out", str(quantized)]) == 0
    rows = list(csv.DictReader((tmp_path / "reports" / "report.csv").open()))
    assert [r["method"] for r in rows] == ["none", "prune", "none", "tucker"]
    assert int(rows[3]["params"]) < int(rows[2]["params"])

    static = tmp_path / "reports" / "static"
    argv = ["compress", "--config", "sgd", "--ckpt_path", str(trained), "--method", "quantize"]
    argv += ["--scheme", "int8_static", "--calibration_batches", "2", "--repeats", "1", "--out", str(static)]
    assert main(argv) == 0
    program = torch.export.load(static / "model.pt2")  # an exported graph with int8 weights, calibrated scales
    assert any("quantize_per_tensor" in str(node.target) for node in program.graph.nodes)
    rows = list(csv.DictReader((tmp_path / "reports" / "report.csv").open()))
    assert (
        rows[-1]["settings"] == "int8_static" and abs(float(rows[-1]["test_acc"]) - float(rows[-2]["test_acc"])) < 0.05
    )


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    base = ["compress", "--config", "sgd", "--ckpt_path", str(trained), "--out", str(tmp_path / "x")]
    assert main([*base, "--method", "prune", "--sparsity", "1.5"]) == 2
    assert "aipflow: error: ValueError: pruning.sparsity must lie in [0, 1), got 1.5" in capsys.readouterr().err
    assert main([*base, "--method", "low_rank"]) == 2
    assert "give one of --energy, --ratio, --rank" in capsys.readouterr().err
    assert main(["compress", "--config", "sgd", "--ckpt_path", str(tmp_path / "none.ckpt"), "--method", "prune"]) == 2
    assert f"aipflow: error: --ckpt_path {tmp_path / 'none.ckpt'}: no such file" in capsys.readouterr().err


#: every method and quantization scheme through the command, on the digits CNN (one Linear head, convolutions):
#: (argv, the settings the report must show, whether the stored weights shrink or their non-zeros fall)
EVERY_METHOD = {
    "prune": (["--method", "prune", "--sparsity", "0.5"], "sparsity 0.5 (global)", "nonzero"),
    "channels": (["--method", "channels", "--ratio", "0.25"], "ratio 0.25 (l1)", "params"),
    "int8_dynamic": (["--method", "quantize", "--scheme", "int8_dynamic"], "int8_dynamic", "state_bytes"),
    "int8_weight_only": (["--method", "quantize", "--scheme", "int8_weight_only"], "int8_weight_only", "state_bytes"),
    "low_rank": (["--method", "low_rank", "--rank", "2"], "rank 2", "params"),
    "cp": (["--method", "cp", "--rank", "4"], "rank 4", "params"),
    "tensor_train": (["--method", "tensor_train", "--rank", "2"], "max rank 2", "params"),
}


@pytest.mark.parametrize("name", sorted(EVERY_METHOD))
def test_every_method_and_scheme_runs_through_the_command(name, trained, tmp_path):
    """The plugin README's own example (``--method quantize --scheme int8_dynamic``) once crashed in the report
    (``w != 0`` on torchao's Int8Tensor): each method writes its row, its model and a report that shows it worked."""
    options, settings, smaller = EVERY_METHOD[name]
    out = tmp_path / name
    # one of them is given the config the run saved (it holds fit's ckpt_path: once "Option 'ckpt_path' is not
    # accepted"), the others the recipe's name
    config = str(trained.parent.parent / "config.yaml") if name == "low_rank" else "sgd"
    argv = ["compress", "--config", config, "--ckpt_path", str(trained), *options, "--repeats", "1", "--out", str(out)]
    assert main(argv) == 0
    before, after = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert settings in after["settings"], after["settings"]
    assert int(after[smaller]) < int(before[smaller]), (smaller, before[smaller], after[smaller])
    assert int(after["nonzero"]) > 0 and 0 <= float(after["test_acc"]) <= 1 and float(after["latency_1_ms"]) > 0
    if name.startswith("int8"):  # int8 weights (and activations) keep the predictions of this small network
        assert abs(float(after["test_acc"]) - float(before["test_acc"])) < 0.05
    assert (out / "model.pt").stat().st_size > 0 and (out / "report.md").exists()


def test_head_pruning_of_a_network_without_attention_is_one_line(trained, tmp_path, capsys):
    argv = ["compress", "--config", "sgd", "--ckpt_path", str(trained), "--method", "heads", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "ValueError: prune_heads: SmallCNN has no attention module with heads" in capsys.readouterr().err
