"""Train flat, then compress: do sharpness-aware and Bayesian optimizers leave networks that compress better?

The core digits recipes (`sgd`, `adamw`, `sam`, `bsam`, `ivon`: 30 epochs, 20 % symmetric label noise, each
optimizer with its recipe's settings) train the same MLP (64 -> 256 -> 256 -> 10, Linear layers only, so that
pruning, int8 and low-rank all act on every layer), seeds ``--seeds`` (noise draw, order, initialisation). Each
trained network (its weights; for bSAM / IVON the posterior mean) is then compressed and tested on the clean test
split:

- global magnitude pruning at 50 / 70 / 90 % of the weights, without fine-tuning and after a short one (2 epochs
  of SGD, lr 0.01, momentum 0.9, on the same noisy training split; masks fixed; the same for every optimizer so
  that only the starting point differs);
- int8 dynamic quantization (torchao) of every Linear layer;
- low-rank factorisation by truncated SVD of the two hidden Linear layers to 50 / 25 / 10 % of their weights (the
  rank each budget allows: the same size for every optimizer).

The table gives test accuracy of the dense network and the drop (points) after each compression, mean ± std over
seeds; the plot the accuracy against sparsity per optimizer (error bars: std over seeds).

    python -m benchmarks.compress_flatness [--seeds 0 1 2]

Writes benchmarks/results/compress_flatness.md and compress_flatness.png.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import tempfile
import warnings
from pathlib import Path

from benchmarks._provenance import mean_std, write_results
from benchmarks._runs import quiet_fit_options, seed_options

RECIPES = ("sgd", "adamw", "sam", "bsam", "ivon")
SPARSITIES = (0.5, 0.7, 0.9)
LOW_RANK_BUDGETS = (0.5, 0.25, 0.1)
MLP = [
    "--model.init_args.model=MLP",
    "--model.init_args.model.init_args.hidden=[256, 256]",
]


def test_accuracy(network, datamodule) -> float:
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    task = ClassificationTask(network, num_classes=10, reliability_diagram=False)
    return float(quiet_trainer().test(task, datamodule=datamodule, verbose=False)[0]["test/acc"])


def fine_tune(network, datamodule, epochs: int = 2):
    import torch

    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    task = ClassificationTask(
        network,
        optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        num_classes=10,
        reliability_diagram=False,
    )
    quiet_trainer(max_epochs=epochs, limit_val_batches=0).fit(task, datamodule)
    return network


def one_seed(recipe: str, seed: int) -> dict[str, float]:
    from aipflow_compress.lowrank import low_rank
    from aipflow_compress.pruning import prune_magnitude
    from aipflow_compress.quantize import quantize_linear_layers

    from aipflow.cli import run

    with tempfile.TemporaryDirectory() as root:
        cli = run(
            [
                "fit",
                "--config",
                recipe,
                *MLP,
                *seed_options(seed),
                "--model.init_args.posterior_samples=0",
                "--trainer.callbacks=[]",
                *quiet_fit_options(root),
            ]
        )
    dense, dm = cli.model.model.eval(), cli.datamodule
    out = {"dense": test_accuracy(copy.deepcopy(dense), dm)}
    for sparsity in SPARSITIES:
        pruned = copy.deepcopy(dense)
        prune_magnitude(pruned, sparsity, scope="global")
        out[f"prune {sparsity:.0%}"] = test_accuracy(pruned, dm)
        out[f"prune {sparsity:.0%} + FT"] = test_accuracy(fine_tune(pruned, dm), dm)
    quantized = copy.deepcopy(dense)
    quantize_linear_layers(quantized, "int8_dynamic")
    out["int8"] = test_accuracy(quantized, dm)
    for budget in LOW_RANK_BUDGETS:
        factored = copy.deepcopy(dense)
        report = low_rank(factored, ratio=budget, exclude=r"^net\.5$")  # the 256 -> 10 head stays
        out[f"low-rank {budget:.0%}"] = test_accuracy(factored, dm)
        out[f"energy {budget:.0%}"] = sum(e["energy"] for e in report.values()) / len(report)  # spectrum kept
    print(recipe, seed, {k: round(v, 4) for k, v in out.items()}, flush=True)
    return out


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, suffix, title in ((axes[0], "", "no fine-tuning"), (axes[1], " + FT", "2 epochs of fine-tuning")):
        for recipe, runs in results.items():
            xs = [0.0, *SPARSITIES]
            keys = ["dense", *[f"prune {s:.0%}{suffix}" for s in SPARSITIES]]
            values = np.array([[100 * r[k] for k in keys] for r in runs])
            ax.errorbar(
                xs,
                values.mean(0),
                yerr=values.std(0, ddof=1) if len(runs) > 1 else None,
                label=recipe,
                marker="o",
                capsize=3,
            )
        ax.set_xlabel("share of weights pruned (global magnitude)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("clean test accuracy (%)")
    axes[1].legend(title="trained with")
    fig.suptitle("MLP on digits (20 % label noise): accuracy after pruning, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results = {recipe: [one_seed(recipe, seed) for seed in args.seeds] for recipe in args.recipes}
    columns = [f"prune {s:.0%}" for s in SPARSITIES] + [f"prune {s:.0%} + FT" for s in SPARSITIES]
    columns += ["int8", *[f"low-rank {b:.0%}" for b in LOW_RANK_BUDGETS]]
    rows = []
    for recipe, runs in results.items():
        drops = [mean_std([r["dense"] - r[c] for r in runs]) for c in columns]
        rows.append(f"| {recipe} | {mean_std([r['dense'] for r in runs])} | " + " | ".join(drops) + " |")
    energy = " · ".join(
        f"{recipe} {mean_std([r[f'energy {LOW_RANK_BUDGETS[1]:.0%}'] for r in runs])}"
        for recipe, runs in results.items()
    )
    png = Path(__file__).parent / "results" / "compress_flatness.png"
    plot(results, png)
    lines = [
        "# Train flat, then compress (digits, MLP, CPU)",
        "",
        f"Core recipes {', '.join(args.recipes)} (30 epochs, 20 % symmetric noise) training an MLP 64-256-256-10, "
        f"seeds {', '.join(map(str, args.seeds))}; clean test accuracy (%) of the dense network and the drop in "
        "points after each compression (positive: worse), mean ± std over seeds. Pruning is global magnitude "
        "pruning; FT is 2 epochs of SGD (lr 0.01, momentum 0.9) with the masks fixed; int8 is torchao's dynamic "
        "int8 of every Linear layer; low-rank factorises the hidden Linear layers by truncated SVD to 50 / 25 / 10 % "
        f"of their weights (squared singular values kept at 25 %, averaged over layers: {energy}). bSAM and IVON "
        "are compressed at their posterior mean.",
        "",
        "| trained with | dense acc | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
        *rows,
        "",
        "![accuracy after pruning](compress_flatness.png)",
    ]
    write_results("compress_flatness.md", lines)


if __name__ == "__main__":
    main()
