"""Digits, 0 % and 40 % symmetric label noise, 3 seeds: AdamW / SGD vs SAM, ASAM, bSAM, IVON.

Each run is the optimizer's recipe (recipes/<name>.yaml: small CNN, 30 epochs, cosine schedule), tested at the
best-validation-NLL checkpoint. Writes benchmarks/results/optimizers_digits.md (mean +- std over seeds) and
benchmarks/results/optimizers_digits_reliability.png (seed 0, test set).

    python -m benchmarks.optimizers_digits [--seeds 0 1 2] [--noise 0.0 0.4] [--epochs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._provenance import mean_std, provenance_markdown

os.environ.setdefault("PYTHONWARNINGS", "ignore")

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {"AdamW": "adamw", "SGD": "sgd", "SAM": "sam", "ASAM": "asam", "bSAM": "bsam", "IVON": "ivon"}


def one_run(recipe: str, noise: float, seed: int, epochs: int, workdir: Path, extra: tuple[str, ...] = ()) -> dict:
    """One recipe run; ``extra`` overrides (e.g. a temperature). The cosine schedule's ``T_max`` follows
    ``epochs``; a per-step schedule (the Langevin recipes' PolynomialDecayLR) is left as the recipe has it."""
    from aipflow.cli import run
    from aipflow.config import resolve_recipe

    cosine = "CosineAnnealingLR" in resolve_recipe(recipe).read_text()

    argv = [
        "fit",
        "--config",
        recipe,
        f"--seed_everything={seed}",
        f"--data.init_args.label_noise.rate={noise}",
        f"--data.init_args.label_noise.seed={seed}",
        f"--data.init_args.shuffle_seed={seed}",
        f"--trainer.max_epochs={epochs}",
        *([f"--model.init_args.lr_scheduler.init_args.T_max={epochs}"] if cosine else []),
        *extra,
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={workdir}",
        f"--trainer.logger.init_args.name={recipe}-n{noise}-s{seed}",
    ]
    start = time.perf_counter()
    cli = run(argv)
    elapsed = time.perf_counter() - start
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    metrics["time_s"] = elapsed
    metrics["diagram"] = str(cli.model.reliability_diagram_path)
    return metrics


def cell(rows: list[dict], key: str) -> str:
    return mean_std([r[key] for r in rows if key in r], 1.0, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.4])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--only", nargs="*", default=list(RUNS))
    args = parser.parse_args()

    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="aipflow-bench-"))
    results: dict[tuple[float, str], list[dict]] = {}
    total = len(args.noise) * len(args.seeds) * len(args.only)
    done = 0
    for noise in args.noise:
        for seed in args.seeds:
            for name in args.only:
                out = one_run(RUNS[name], noise, seed, args.epochs, workdir)
                results.setdefault((noise, name), []).append(out)
                done += 1
                print(
                    f"[{done}/{total}] noise={noise} seed={seed} {name:<5} acc={out['test/acc']:.4f} "
                    f"nll={out['test/nll']:.4f} ece={out['test/ece']:.4f} ({out['time_s']:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )

    lines = [
        "# Optimizers on digits (scikit-learn load_digits), small CNN",
        "",
        f"Recipes `recipes/<optimizer>.yaml`, {args.epochs} epochs, cosine LR, batch 64; symmetric label noise",
        "with the `exact` convention on the training split only (val/test clean); tested at the best-validation-NLL",
        f"checkpoint. Seeds {args.seeds} (model init, noise draw and data order); mean ± std over seeds. ECE: 15",
        "bins (the `test/ece` of every run); the posterior-predictive rows (bSAM, IVON: 10 samples, `pp_*`) use 20",
        "bins as the bSAM paper. Produced by `python -m benchmarks.optimizers_digits` on 2 CPU cores.",
        "",
    ]
    for noise in args.noise:
        lines += [
            f"## {int(noise * 100)} % symmetric noise",
            "",
            "| optimizer | test accuracy | test NLL | test ECE | time / run (s) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in args.only:
            rows = results[(noise, name)]
            t = statistics.fmean(r["time_s"] for r in rows)
            lines.append(
                f"| {name} | {cell(rows, 'test/acc')} | {cell(rows, 'test/nll')} | {cell(rows, 'test/ece')} | {t:.0f} |"
            )
            if "test/pp_acc" in rows[0]:
                lines.append(
                    f"| {name} (posterior predictive) | {cell(rows, 'test/pp_acc')} | {cell(rows, 'test/pp_nll')} | "
                    f"{cell(rows, 'test/pp_ece')} | |"
                )
        lines.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines += ["", provenance_markdown()]
    (RESULTS / "optimizers_digits.md").write_text("\n".join(lines) + "\n")
    _diagram_grid(results, args)
    print("\n".join(lines))


def _diagram_grid(results, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.noise), len(args.only), figsize=(3.2 * len(args.only), 4.0 * len(args.noise)))
    axes = [[axes]] if len(args.noise) == 1 and len(args.only) == 1 else axes
    if len(args.noise) == 1:
        axes = [axes]
    for i, noise in enumerate(args.noise):
        for j, name in enumerate(args.only):
            ax = axes[i][j]
            ax.imshow(plt.imread(results[(noise, name)][0]["diagram"]))
            ax.set_title(f"{name}, {int(noise * 100)}% noise, seed {args.seeds[0]}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(RESULTS / "optimizers_digits_reliability.png", dpi=110)


if __name__ == "__main__":
    main()
