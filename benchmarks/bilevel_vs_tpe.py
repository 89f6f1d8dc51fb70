"""Hypergradient tuning against a black-box search on the same budget: Optuna's TPE (Bergstra et al. 2011) over
weight decay and label smoothing, each trial a full training run, against one ``bilevel/digits_hypergradient`` run
that tunes them while it trains (an L2 strength per layer and label smoothing, Lorraine et al. 2020).

Digits with 40 % symmetric noise, small CNN, SGD (lr 0.05, momentum 0.9, cosine), ``--epochs`` epochs. TPE
searches log10 weight decay in [-6, -1] and label smoothing in [0, 0.5] (the core ``sgd`` recipe with
``label_smoothing`` via the ``LabelSmoothing`` loss); its objective is the final validation NLL. The plot shows the
best validation NLL found against wall time for TPE (``--trials`` trials, seeded sampler) and the hypergradient
run's final validation NLL at its wall time; the table adds test accuracy of the best TPE trial and of the
hypergradient run, ``--seeds`` seeds for the hypergradient run, one TPE study per seed.

    pip install -e "plugins/bilevel[hpo]"
    python -m benchmarks.bilevel_vs_tpe [--trials 12] [--seeds 0 1 2] [--epochs 30]

Writes benchmarks/results/bilevel_vs_tpe.md and bilevel_vs_tpe.png.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks._provenance import mean_std, write_results
from benchmarks._runs import quiet_fit_options, seed_options


def train(argv: list[str], seed: int, epochs: int) -> dict[str, float]:
    from aipflow.cli import run

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        cli = run(
            [
                "fit",
                *argv,
                *seed_options(seed),
                f"--trainer.max_epochs={epochs}",
                f"--model.init_args.lr_scheduler.init_args.T_max={epochs}",
                "--model.init_args.reliability_diagram=false",
                "--trainer.callbacks=[]",
                *quiet_fit_options(root),
            ]
        )
        seconds = time.perf_counter() - start
        val = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
        test = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {"val_nll": float(val["val/nll"]), "test_acc": float(test["test/acc"]), "seconds": seconds}


def tpe_study(seed: int, trials: int, epochs: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    history = []
    start = time.perf_counter()

    def objective(trial) -> float:
        decay = 10 ** trial.suggest_float("log10_weight_decay", -6.0, -1.0)
        smoothing = trial.suggest_float("label_smoothing", 0.0, 0.5)
        argv = [
            "--config",
            "sgd",
            "--data.init_args.label_noise.rate=0.4",
            f"--model.init_args.optimizer.init_args.weight_decay={decay}",
            "--model.init_args.loss=LabelSmoothing",
            f"--model.init_args.loss.init_args.smoothing={smoothing}",
        ]
        result = train(argv, seed, epochs)
        history.append({**result, "elapsed": time.perf_counter() - start, "decay": decay, "smoothing": smoothing})
        print("tpe", seed, trial.number, {k: round(v, 4) for k, v in history[-1].items()}, flush=True)
        return result["val_nll"]

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return history


def plot(tpe: dict[int, list[dict]], hyper: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, history in enumerate(tpe.values()):
        best, xs, ys = float("inf"), [], []
        for h in history:
            best = min(best, h["val_nll"])
            xs.append(h["elapsed"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="C0", alpha=0.8, label="TPE, best so far" if i == 0 else None)
    for i, result in enumerate(hyper.values()):
        ax.scatter(
            result["seconds"], result["val_nll"], color="C1", zorder=3, label="hypergradient run" if i == 0 else None
        )
    ax.set_xlabel("wall time (s, 2 CPU cores)")
    ax.set_ylabel("validation NLL (clean labels)")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Digits, 40 % noise: tuning weight decay and label smoothing")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    hyper = {}
    for seed in args.seeds:
        hyper[seed] = train(["--config", "bilevel/digits_hypergradient"], seed, args.epochs)
        print("hypergradient", seed, hyper[seed], flush=True)
    tpe = {seed: tpe_study(seed, args.trials, args.epochs) for seed in args.seeds}
    png = Path(__file__).parent / "results" / "bilevel_vs_tpe.png"
    plot(tpe, hyper, png)
    best = {seed: min(h, key=lambda r: r["val_nll"]) for seed, h in tpe.items()}
    runs = list(hyper.values())
    decays = ", ".join(f"{b['decay']:.1e}" for b in best.values())
    smoothings = ", ".join(f"{b['smoothing']:.2f}" for b in best.values())
    lines = [
        "# Hypergradient tuning vs TPE (digits, 40 % noise, CPU)",
        "",
        f"Small CNN, SGD, {args.epochs} epochs; seeds {', '.join(map(str, args.seeds))}. TPE: {args.trials} trials "
        "per seed (log10 weight decay in [-6, -1], label smoothing in [0, 0.5]), objective the final validation NLL; "
        "its best trial's values. Hypergradient: one run per seed tuning an L2 strength per layer and label "
        "smoothing while it trains (`bilevel/digits_hypergradient`). Mean ± std over seeds.",
        "",
        "| method | validation NLL | test acc (%) | wall time (s) | chosen |",
        "| --- | --- | --- | --- | --- |",
        f"| TPE, best of {args.trials} | {mean_std([b['val_nll'] for b in best.values()], 1.0, 3)} | "
        f"{mean_std([b['test_acc'] for b in best.values()])} | "
        f"{mean_std([h[-1]['elapsed'] for h in tpe.values()], 1.0, 0)} | weight decay {decays}; smoothing "
        f"{smoothings} |",
        f"| hypergradient, one run | {mean_std([r['val_nll'] for r in runs], 1.0, 3)} | "
        f"{mean_std([r['test_acc'] for r in runs])} | {mean_std([r['seconds'] for r in runs], 1.0, 0)} | "
        "tuned during fit |",
        "",
        "![best validation NLL against wall time](bilevel_vs_tpe.png)",
    ]
    write_results("bilevel_vs_tpe.md", lines)


if __name__ == "__main__":
    main()
