"""nnPU vs uPU on digits, epoch by epoch (the PU recipes, 5 seeds): the clean validation error and the training
estimate of the negative-class risk, R_U^- - pi R_P^-, as in Kiryo et al. (2017, Fig. 1): uPU drives that
estimate below zero, which no risk can be, and its error climbs; nnPU keeps it at zero or above.

    python -m benchmarks.weaksup_pu_curves [--seeds 0 1 2 3 4]

Writes benchmarks/results/weaksup_pu_curves.png and .csv (per seed and epoch).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
import warnings
from pathlib import Path

from benchmarks._provenance import provenance_markdown

RESULTS = Path(__file__).resolve().parent / "results"
RECIPES = {"nnPU": "pu_nnpu", "uPU": "pu_upu"}
CURVES = {"val/error": "clean validation error %", "train/negative_part": "R_U^- - pi R_P^- (training)"}


def epoch_curves(recipe: str, seed: int) -> dict[str, list[float]]:
    """Per-epoch values of ``CURVES`` from one run of ``recipe`` (read back from its CSV log)."""
    from weaksup_digits import recipe_argv

    from aipflow.cli import run

    with tempfile.TemporaryDirectory() as tmp:
        run(recipe_argv(recipe, [f"--trainer.logger.init_args.save_dir={tmp}"], seed, tmp))
        (metrics,) = Path(tmp).rglob("metrics.csv")
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
    curves: dict[str, dict[int, float]] = {key: {} for key in CURVES}
    for row in rows:
        for key in CURVES:
            if row.get(key):
                curves[key][int(row["epoch"])] = float(row[key]) * (100 if key == "val/error" else 1)
    return {key: [values[e] for e in sorted(values)] for key, values in curves.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    torch.set_num_threads(2)
    runs = {name: [epoch_curves(recipe, seed) for seed in args.seeds] for name, recipe in RECIPES.items()}
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "weaksup_pu_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["estimator", "seed", "epoch", *CURVES])
        for name, per_seed in runs.items():
            for seed, curves in zip(args.seeds, per_seed, strict=True):
                for epoch, values in enumerate(zip(*(curves[key] for key in CURVES), strict=False)):
                    writer.writerow([name, seed, epoch, *values])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, label) in zip(axes, CURVES.items(), strict=True):
        for name, per_seed in runs.items():
            length = min(len(c[key]) for c in per_seed)
            values = np.array([c[key][:length] for c in per_seed])
            mean, std = values.mean(0), values.std(0)
            line = ax.plot(np.arange(length), mean, label=name)[0]
            ax.fill_between(np.arange(length), mean - std, mean + std, color=line.get_color(), alpha=0.2)
        if key == "train/negative_part":
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"PU on digits (even vs odd, 100 labelled positives), mean +- std over seeds {args.seeds}")
    fig.tight_layout()
    fig.savefig(RESULTS / "weaksup_pu_curves.png", dpi=120)
    summary = ["# PU learning curves on digits (weaksup_pu_curves.csv / .png)", ""]
    for name, per_seed in runs.items():
        last = [c["val/error"][-1] for c in per_seed]
        lowest = [min(c["train/negative_part"]) for c in per_seed]
        line = (
            f"{name}: last-epoch validation error {statistics.mean(last):.1f} %, "
            f"lowest negative part {statistics.mean(lowest):+.3f}"
        )
        print(line)
        summary.append(f"- {line}")
    summary += ["", provenance_markdown()]
    (RESULTS / "weaksup_pu_curves.md").write_text("\n".join(summary))


if __name__ == "__main__":
    main()
