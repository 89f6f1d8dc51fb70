"""Two CPU processes (gloo) through the installed ``aipflow`` command, as a user runs it: fit, the test after fit,
one summary and one reliability diagram (rank 0), every collective called on every rank. The ``ddp`` case is
docker/README.md's multi-GPU command (``fit --config quickstart --trainer.strategy=ddp``) with
``--trainer.accelerator=cpu --trainer.devices=2``.

Broken before (all six fail on the old code): ``ddp`` relaunched ``<cwd>/aipflow`` (sys.argv[0] was overwritten),
``ddp_spawn`` could not pickle a CLI class defined in a function, and the test after fit hung up the other rank
(``trainer.log_dir``, a collective, was called on rank 0 only)."""

import os
import shutil
import subprocess

import pytest

# a short run on CPU processes; the device count is each launch's own
TINY = [
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a short cross-fit for the quickstart's T estimate: the point here is the processes, not the estimate
SHORT = {"quickstart": ["--trainer.callbacks.init_args.warmup_epochs=1"]}


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(recipe, strategy, root):
    exe = shutil.which("aipflow")
    assert exe, "the aipflow console script is not installed"
    argv = [exe, "fit", "--config", recipe, f"--trainer.strategy={strategy}", "--trainer.devices=2", *TINY]
    argv += SHORT.get(recipe, [])
    argv += [f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}"]
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=400, env=offline_env())


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, strategy",
    [
        ("quickstart", "ddp"),
        ("sam", "ddp"),
        ("bsam", "ddp"),
        ("weaksup/pu_nnpu", "ddp"),
        ("quickstart", "ddp_spawn"),
        ("quickstart", "ddp_fork"),
    ],
)
def test_fit_and_test_on_two_processes(recipe, strategy, tmp_path):
    done = run_cli(recipe, strategy, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("aipflow run summary") == 1, done.stdout[-2000:]
    diagrams = 0 if recipe.startswith("weaksup/") else 1  # the classification task draws one, on rank 0
    assert len(list(tmp_path.rglob("reliability_test.png"))) == diagrams


@pytest.mark.slow
def test_predict_on_two_processes_writes_every_row_once(tmp_path):
    import pandas as pd

    from aipflow.cli import main

    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    fit = ["fit", "--config", "sgd", f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    assert main([*fit, *tiny, "--test_after_fit=false", "--trainer.enable_progress_bar=false"]) == 0
    exe = shutil.which("aipflow")
    out = tmp_path / "predictions.parquet"  # the installed script, two processes, parquet
    done = subprocess.run(
        [
            exe,
            "predict",
            "--config",
            "sgd",
            f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            f"--predictions_file={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=offline_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("rows written") == 1
    table = pd.read_parquet(out)
    assert list(table["index"]) == list(range(360))  # the sampler's padding rows dropped, both ranks' rows kept


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TORCHRUN_ARGS = [
    "-m",
    "aipflow.cli",
    "fit",
    "--config",
    "quickstart",
    "--trainer.strategy=ddp",
    *TINY,
    *SHORT["quickstart"],
]


def torchrun(launch: list[str], root, extra: list[str], command: list[str] = TORCHRUN_ARGS) -> subprocess.Popen:
    import sys

    argv = [sys.executable, "-m", "torch.distributed.run", *launch, *command, *extra]
    argv += [f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}"]
    pipe = subprocess.PIPE
    env = {**offline_env(), "PYTHONPATH": REPOSITORY}  # the tests' CPU strategies, by class path
    return subprocess.Popen(argv, cwd=root, env=env, stdout=pipe, stderr=pipe, text=True)


def two_loopback_nodes(tmp_path, command: list[str]) -> list[tuple[str, str]]:
    """Runs ``command`` as two nodes of one process each on the loopback (torchrun per node); their output."""
    port = free_port()
    nodes = []
    for rank in (0, 1):
        root = tmp_path / f"node{rank}"
        root.mkdir(parents=True, exist_ok=True)
        launch = ["--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1", "--master_addr=127.0.0.1"]
        extra = ["--trainer.devices=1", "--trainer.num_nodes=2"]
        nodes.append(torchrun([*launch, f"--master_port={port}"], root, extra, command))
    outputs = [node.communicate(timeout=400) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    return outputs


@pytest.mark.slow
def test_torchrun_one_node_two_processes(tmp_path):
    # docker/README.md's torchrun form (`torchrun ... -m aipflow.cli fit ...`): Lightning reads torchrun's environment
    process = torchrun(["--nproc_per_node=2", f"--master_port={free_port()}"], tmp_path, ["--trainer.devices=2"])
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, err[-3000:]
    assert out.count("aipflow run summary") == 1 and len(list(tmp_path.rglob("reliability_test.png"))) == 1


@pytest.mark.slow
def test_two_nodes_of_one_process_on_the_loopback(tmp_path):
    outputs = two_loopback_nodes(tmp_path, TORCHRUN_ARGS)
    assert [out.count("aipflow run summary") for out, _ in outputs] == [1, 0]  # written once, by global rank 0
    assert len(list(tmp_path.rglob("reliability_test.png"))) == 1


@pytest.mark.slow
def test_fsdp_on_two_loopback_nodes_fits_and_tests_in_a_new_run(tmp_path):
    # SAM on FSDP (the CPU test strategy, by class path), two nodes: fit, then the test command the fit prints
    # (Lightning cannot test a model it sharded in the same process), run as printed
    strategy = [
        "--trainer.strategy.class_path=aipflow.testing.CPUFSDPStrategy",
        "--trainer.strategy.init_args.process_group_backend=gloo",
    ]
    fit = two_loopback_nodes(tmp_path, ["-m", "aipflow.cli", "fit", "--config", "sam", *strategy, *TINY])
    lines = [line for line in fit[0][0].splitlines() if line.startswith("aipflow: the test after fit runs")]
    assert len(lines) == 1 and "new process under CPUFSDPStrategy" in lines[0], fit[0][0][-2000:]
    test_command = lines[0].split(": aipflow ", 1)[1].split()
    assert test_command[:3] == ["test", "--config", "sam"] and test_command[-1].startswith("--ckpt_path=")
    assert "--trainer.devices=1" in test_command and not any(a.startswith("--test_after_fit") for a in test_command)
    tested = two_loopback_nodes(tmp_path / "test", ["-m", "aipflow.cli", *test_command])
    assert "test/acc" in tested[0][0]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_process_stops_the_run_with_one_line_and_last_ckpt_resumes(killed, tmp_path):
    # SIGKILL one process at step 4 of 6 (epoch 1; last.ckpt holds epoch 0): the survivor's next collective fails,
    # and the command says what happened and how to resume instead of a gloo traceback; then the resume finishes
    exe = shutil.which("aipflow")
    argv = [exe, "fit", "--config", "sgd", "--trainer.strategy=ddp", "--trainer.devices=2", *TINY]
    argv += ["--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--test_after_fit=false"]
    argv += [f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    kill = ["--trainer.callbacks+=tests.lightning.faults.KillRank", f"--trainer.callbacks.init_args.rank={killed}"]
    kill += ["--trainer.callbacks.init_args.step=4"]
    env = {**offline_env(), "PYTHONPATH": REPOSITORY}
    done = subprocess.run([*argv, *kill], cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode != 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    lines = [line for line in done.stderr.splitlines() if line.startswith("aipflow: error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert f"process {1 - killed} of 2 stopped at epoch 1, step 4: another process of this run died" in lines[0]
    assert f"resume with --ckpt_path {last}" in lines[0] and "Traceback" not in done.stderr
    if killed == 0:
        return  # the same resume as below
    resume = [*argv, f"--ckpt_path={last}"]
    done = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    import torch

    resumed = torch.load(last, weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (1, 6)
