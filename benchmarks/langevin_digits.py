"""Langevin samplers on digits: SGLD and pSGLD (their recipes: small CNN, 30 epochs, Welling & Teh's decaying
step, samples kept after half the run, every 20th step, 15 at most) at temperature 1 (the Bayesian posterior) and
0.1 (a cold posterior, Wenzel et al. 2020), against SGD and IVON (their recipes), at 0 % and 40 % symmetric label
noise, seeds ``--seeds``. Tested at the best-validation-NLL checkpoint (the core's digits protocol,
``optimizers_digits.py``); the posterior-predictive rows average the collected samples (SGLD / pSGLD) or 10
posterior draws (IVON).

    python -m benchmarks.langevin_digits [--seeds 0 1 2] [--noise 0.0 0.4]

Writes benchmarks/results/langevin_digits.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks._provenance import write_results
from benchmarks.optimizers_digits import cell, one_run

RUNS = {
    "SGD": ("sgd", ()),
    "IVON": ("ivon", ()),
    "SGLD (T 1)": ("sgld", ()),
    "SGLD (T 0.1)": ("sgld", ("--model.init_args.optimizer.init_args.temperature=0.1",)),
    "pSGLD (T 1)": ("psgld", ()),
    "pSGLD (T 0.1)": ("psgld", ("--model.init_args.optimizer.init_args.temperature=0.1",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.4])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="aipflow-langevin-"))
    lines = [
        "# Langevin samplers on digits (small CNN, CPU)",
        "",
        f"Recipes `sgld`, `psgld` (temperature 1 and 0.1), `sgd`, `ivon`; {args.epochs} epochs; symmetric noise "
        f"on the training split; tested at the best-validation-NLL checkpoint; seeds {args.seeds}; mean ± std. "
        "ECE 15 bins; posterior-predictive rows 20 bins. With batch norm (the small CNN has it) a collected sample "
        "is evaluated with the network's current running statistics.",
        "",
    ]
    for noise in args.noise:
        lines += [
            f"## {int(noise * 100)} % symmetric noise",
            "",
            "| optimizer | test accuracy | test NLL | test ECE | time / run (s) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, (recipe, extra) in RUNS.items():
            rows = [one_run(recipe, noise, seed, args.epochs, workdir, extra) for seed in args.seeds]
            for r in rows:
                print(name, noise, {k: v for k, v in r.items() if k.startswith("test/")}, file=sys.stderr, flush=True)
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
    write_results("langevin_digits.md", lines)


if __name__ == "__main__":
    main()
