"""Noisy labels on one's own files: the own-data recipes pointed at an image folder and a CSV, 3 seeds.

Sources (written here from scikit-learn's data, as a user's files would be):
- images: the 1,797 digits as a 16 px greyscale PNG folder, ``noisy_images_nce_rce`` (timm ResNet-18, random
  init, trained at 32 px, timm's augmentation with crop scale 0.35-1 and no flips (digits are not mirror-symmetric);
  AdamW 1e-3, cosine, batch 64, ``--epochs`` epochs);
- tabular: breast cancer (569 rows, 30 features, 2 classes) as a CSV, ``noisy_tabular_nce_rce`` (MLP 256-256,
  dropout 0.3, AdamW 1e-3, cosine, 60 epochs).

Each with 40 % symmetric noise (exact) on the training split, and the loss swapped by one override: CE, NCE+RCE
(alpha 1, beta 1), ELR (lambda 3, beta 0.7). Then the table with a noisy label column instead of generated noise:
an instance-dependent noisy copy of the label (Xia et al. 2020, 40 %) written into the CSV, trained on through
``--data.noisy_label_column``. Clean test accuracy: the best epoch and the last (``LabelNoiseMonitor``).

    python -m benchmarks.noisy_labels_own_data [--seeds 0 1 2] [--epochs 10]

Writes benchmarks/results/noisy_labels_own_data.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks._provenance import mean_std, write_results

LOSSES = {
    "CE": ["--model.init_args.loss=CE"],
    "NCE+RCE": [],  # the recipe's own
    "ELR": ["--model.init_args.loss=ELR", "--model.init_args.loss.lam=3.0", "--model.init_args.loss.beta=0.7"],
}


def one_run(recipe: str, source: Path, seed: int, extra: list[str]) -> dict:
    from aipflow.cli import run
    from aipflow.lightning import LabelNoiseMonitor

    argv = [
        "fit",
        "--config",
        recipe,
        f"--data.source={source}",
        f"--seed_everything={seed}",
        f"--data.label_noise.seed={seed}",
        f"--data.shuffle_seed={seed}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--test_after_fit=false",
        *extra,
    ]
    start = time.perf_counter()
    cli = run(argv)
    elapsed = time.perf_counter() - start
    monitor = next(cb for cb in cli.trainer.callbacks if isinstance(cb, LabelNoiseMonitor))
    accs = [row["test_acc"] for row in monitor.history]
    report = cli.datamodule.noise_report
    return {"best": max(accs), "last": accs[-1], "time": elapsed, "realised": report.realised_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the image runs (cosine over as many)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from aipflow.data.examples import write_digits_image_folder, write_table

    folder = Path(tempfile.mkdtemp(prefix="aipflow-own-data-"))
    images = write_digits_image_folder(folder / "digits", size=16)
    table = write_table("breast_cancer", folder / "breast_cancer.csv", noisy_label_column="annotator", noise_rate=0.4)
    image_args = [
        "--data.images.size=32",
        "--data.images.hflip=0.0",
        f"--trainer.max_epochs={args.epochs}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
    ]
    settings = [
        ("digits image folder, ResNet-18 32 px", "noisy_images_nce_rce", images, image_args, "symmetric 40 %"),
        ("breast cancer CSV, MLP", "noisy_tabular_nce_rce", table, [], "symmetric 40 %"),
        (
            "breast cancer CSV, MLP",
            "noisy_tabular_nce_rce",
            table,
            ["--data.label_noise.kind=null", "--data.noisy_label_column=annotator"],
            "noisy label column (instance-dependent)",
        ),
    ]
    rows = []
    for name, recipe, source, extra, noise in settings:
        for loss, loss_args in LOSSES.items():
            runs = [one_run(recipe, source, seed, extra + loss_args) for seed in args.seeds]
            realised = statistics.fmean(r["realised"] for r in runs)
            best, last = mean_std([r["best"] for r in runs]), mean_std([r["last"] for r in runs])
            row = (
                f"| {name} | {noise} (realised {100 * realised:.1f} %) | {loss} | {best} | {last} | "
                f"{statistics.fmean(r['time'] for r in runs):.0f} |"
            )
            print(row, flush=True)
            rows.append(row)
    lines = [
        "# Noisy labels on one's own files (image folder, CSV), 3 seeds",
        "",
        "Clean test accuracy (%), mean ± std over seeds "
        + ", ".join(map(str, args.seeds))
        + f" (noise draw, order and initialisation seeded alike). Image runs: {args.epochs} epochs. "
        "The recipes are the own-data ones, pointed at the files with `--data.source` and the loss swapped by one "
        "override; how the sources are made is in the script's docstring.",
        "",
        "| source | training labels | loss | best epoch | last epoch | s / run |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    write_results("noisy_labels_own_data.md", lines)


if __name__ == "__main__":
    main()
