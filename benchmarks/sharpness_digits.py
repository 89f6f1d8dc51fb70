"""Sharpness over training on digits: SGD vs SAM vs IVON (and the Langevin samplers), measured by the
``SharpnessMonitor`` callback.

Each core recipe (small CNN, 20 % symmetric label noise, 30 epochs) runs with the monitor every ``--every``
epochs on the first 4 training batches (256 examples, in order): the top Hessian eigenvalue (Lanczos, 20 steps),
the Hessian trace (Hutchinson, 10 vectors), SAM's m-sharpness (rho 0.05, m 64) and adaptive sharpness (rho 0.5,
m 64), one ascent step each; for IVON also the posterior's average variance and the PAC-Bayes bound. Seeds
``--seeds``; the plot shows the mean over seeds per epoch, the table the values after training and the clean test
accuracy.

    python -m benchmarks.sharpness_digits [--recipes sgd sam ivon] [--seeds 0 1 2] [--every 3]

Writes benchmarks/results/sharpness_digits.md and sharpness_digits.png.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

from benchmarks._provenance import mean_std, write_results
from benchmarks._runs import quiet_fit_options, seed_options

KEYS = ("lambda_max", "hessian_trace", "m_sharpness", "adaptive_sharpness")


def one_run(recipe: str, seed: int, every: int) -> tuple[list[dict], float]:
    from aipflow.cli import run
    from aipflow.lightning import SharpnessMonitor

    monitor = (
        "[{class_path: SharpnessMonitor, init_args: {every_n_epochs: "
        f"{every}, num_batches: 4, m: 64, posterior_samples: 8, plot: false}}}}]"
    )
    with tempfile.TemporaryDirectory() as root:
        cli = run(
            [
                "fit",
                "--config",
                recipe,
                *seed_options(seed),
                f"--trainer.callbacks={monitor}",
                *quiet_fit_options(root),
            ]
        )
        found = [cb for cb in cli.trainer.callbacks if isinstance(cb, SharpnessMonitor)]
        metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    history = found[0].history
    print(recipe, seed, {k: round(v, 4) for k, v in history[-1].items()}, round(metrics["test/acc"], 4), flush=True)
    return history, float(metrics["test/acc"])


def plot(results: dict[str, list[list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.4))
    for ax, key in zip(axes, KEYS, strict=True):
        for recipe, runs in results.items():
            epochs = [h["epoch"] + 1 for h in runs[0]]
            values = np.array([[h[key] for h in history] for history in runs])
            mean = values.mean(0)
            ax.plot(epochs, mean, marker="o", markersize=3, label=recipe)
            if len(runs) > 1:
                spread = values.std(0, ddof=1)
                ax.fill_between(epochs, mean - spread, mean + spread, alpha=0.2)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch (0: at initialisation)")
        ax.grid(alpha=0.3)
        if key in ("lambda_max", "hessian_trace"):
            ax.set_yscale("log")
    axes[0].legend(title="trained with")
    fig.suptitle("Digits, small CNN, 20 % label noise: sharpness on 256 training examples (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["sgd", "sam", "ivon"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--every", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results, accuracy = {}, {}
    for recipe in args.recipes:
        runs = [one_run(recipe, seed, args.every) for seed in args.seeds]
        results[recipe] = [h for h, _ in runs]
        accuracy[recipe] = [a for _, a in runs]
    png = Path(__file__).parent / "results" / "sharpness_digits.png"
    plot(results, png)
    extra = ("posterior_variance", "gibbs_error", "pac_bayes_bound")
    rows = []
    for recipe, runs in results.items():
        cells = [mean_std([h[-1][k] for h in runs], 1.0, 3) for k in KEYS]
        cells += [mean_std([h[-1][k] for h in runs], 1.0, 4) if k in runs[0][-1] else "-" for k in extra]
        rows.append(f"| {recipe} | {mean_std(accuracy[recipe])} | " + " | ".join(cells) + " |")
    lines = [
        "# Sharpness over training (digits, small CNN, CPU)",
        "",
        f"Core recipes {', '.join(args.recipes)} (30 epochs, 20 % symmetric label noise), seeds "
        f"{', '.join(map(str, args.seeds))}; `SharpnessMonitor` every {args.every} epochs on the first 4 training "
        "batches (256 examples, the noisy labels the run trains on, network in eval mode): top Hessian eigenvalue "
        "(Lanczos, 20 steps), Hessian trace (Hutchinson, 10 Rademacher vectors), m-sharpness (rho 0.05) and adaptive "
        "sharpness (rho 0.5, T = |w|), m = 64, one ascent step (a lower bound of the maximum). Values after the last "
        "epoch, mean ± std over seeds; clean test accuracy (%) of the final weights. For IVON: the posterior's "
        "average variance, the Gibbs classifier's error on those batches (8 samples) and McAllester's PAC-Bayes "
        "bound (delta 0.05, the prior N(0, 1 / (N wd)) IVON's weight decay implies).",
        "",
        "| trained with | test acc (%) | lambda_max | Hessian trace | m-sharpness | adaptive sharpness | "
        "posterior variance | Gibbs error | PAC-Bayes bound |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "![sharpness over training](sharpness_digits.png)",
    ]
    write_results("sharpness_digits.md", lines)


if __name__ == "__main__":
    main()
