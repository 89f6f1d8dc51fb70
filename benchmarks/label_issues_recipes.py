"""The prune-and-retrain recipes as shipped, over seeds: ``aipflow fit --config RECIPE`` (the label-issue search,
the pruning and the training, all from the recipe file), then the final weights on the clean test split; beside
them the same recipe without its ``LabelIssuePruning`` (every noisy label) and on the clean labels.

    python -m benchmarks.label_issues_recipes [--recipes noisy_prune_retrain noisy_prune_retrain_aum] [--seeds 0 1 2]

Writes benchmarks/results/label_issues_recipes.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks._provenance import mean_std, provenance_markdown
from benchmarks._runs import quiet_fit_options, seed_options

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "the recipe (search, prune, train)": [],
    "without the pruning (every noisy label)": ["--trainer.callbacks=[]"],
    "clean labels (no search)": ["--trainer.callbacks=[]", "--data.init_args.label_noise.rate=0.0"],
}


def one_run(recipe: str, seed: int, extra: list[str]) -> dict:
    from aipflow.cli import run

    root = tempfile.mkdtemp(prefix="label_issues_recipes_")
    started = time.perf_counter()
    cli = run(["fit", "--config", recipe, *seed_options(seed), *quiet_fit_options(root), *extra])
    accuracy = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]["test/acc"]
    pruning = next((c for c in cli.trainer.callbacks if type(c).__name__ == "LabelIssuePruning"), None)
    removed = len(pruning.curation.exclude_rows) if pruning is not None else None
    return {"acc": 100 * float(accuracy), "removed": removed, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["noisy_prune_retrain", "noisy_prune_retrain_aum"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    lines = ["# Prune-and-retrain recipes as shipped", "", __doc__.split("\n\n")[0].strip(), ""]
    lines += [
        "Clean-test accuracy % of the final weights, mean ± std over seeds "
        + ", ".join(map(str, args.seeds))
        + " (each seed sets the initialisation, the noise draw and the order); time: the whole `aipflow fit`.",
        "",
        "| recipe | training | test accuracy | rows left out | time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for recipe in args.recipes:
        for variant, extra in VARIANTS.items():
            runs = [one_run(recipe, seed, extra) for seed in args.seeds]
            removed = [r["removed"] for r in runs if r["removed"] is not None]
            row = (
                f"| {recipe} | {variant} | {mean_std([r['acc'] for r in runs], 1)} | "
                f"{mean_std(removed, 1, 0) if removed else ''} | {sum(r['seconds'] for r in runs) / len(runs):.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    lines += ["", provenance_markdown()]
    (RESULTS / "label_issues_recipes.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
