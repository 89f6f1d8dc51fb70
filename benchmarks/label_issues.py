"""Label-issue detection and prune-and-retrain, over seeds.

Detection: precision / recall / F1 of the flagged rows against the rows the noise generator corrupted, for
- cleanlab's documented baseline: scikit-learn ``LogisticRegression`` out-of-sample probabilities by
  ``cross_val_predict`` (5 folds) on the standardised features, then the same detector;
- aipflow's cross-fit network (``aipflow find-issues``'s path): 5 copies of the task's network, each trained on 4
  folds with the task's optimizer (digits: SmallCNN + AdamW 1e-3, 15 epochs; the table: MLP 64-64, 40 epochs);
- on digits also with IVON (the quickstart recipe's settings), each fold predicted by its posterior predictive over
  10 draws (``--issues.posterior_samples=10``).
Both go through ``aipflow.label_issues.find_label_issues`` (cleanlab's ``prune_by_noise_rate``).

Prune-and-retrain (digits, symmetric 40 %): clean-test accuracy of the same network and schedule trained on every
noisy label, on the rows left after pruning the flagged ones, and on the clean labels.

    python -m benchmarks.label_issues [--seeds 0 1 2] [--quick]

Writes benchmarks/results/label_issues.md.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks._provenance import mean_std, provenance_markdown

RESULTS = Path(__file__).resolve().parent / "results"
DIGITS_SETTINGS = [("symmetric", 0.2), ("symmetric", 0.4), ("pair", 0.4), ("instance", 0.4)]


def scores(flagged: np.ndarray, corrupted: np.ndarray) -> tuple[float, float, float]:
    hits = float((flagged & corrupted).sum())
    precision = hits / max(1, flagged.sum())
    recall = hits / max(1, corrupted.sum())
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return 100 * precision, 100 * recall, 100 * f1


def logistic_baseline(x: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(max_iter=2000), x, labels, cv=folds, method="predict_proba")


def network_probabilities(
    network, x: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int, bayesian: bool = False
) -> np.ndarray:
    """5-fold cross-fit: AdamW 1e-3; ``bayesian``: IVON as the quickstart recipe sets it (lr 0.1, hess_init 1,
    beta2 0.99999, weight decay 1e-4), each fold predicted by the posterior predictive over 10 draws."""
    from functools import partial

    from aipflow.lightning import out_of_fold_posteriors
    from aipflow.optim import IVON
    from aipflow.tasks import ClassificationTask

    if bayesian:
        optimizer = partial(IVON, lr=0.1, hess_init=1.0, beta1=0.9, beta2=0.99999, weight_decay=1e-4)
    else:
        optimizer = partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
    task = ClassificationTask(network, num_classes=int(labels.max()) + 1, optimizer=optimizer)
    samples = 10 if bayesian else 0
    return out_of_fold_posteriors(task, x, labels, 5, epochs, 64, seed, posterior_samples=samples).numpy()


def digits_rows(noise: str, rate: float, seed: int):
    from aipflow.data import DigitsDataModule, LabelNoise

    dm = DigitsDataModule(label_noise=LabelNoise(noise, rate, seed=seed))
    dm.setup()
    train = dm.train_set
    return dm, train.x, train.y, train.clean_y


def detection(quick: bool, seeds: list[int]) -> list[dict]:
    from aipflow.label_issues import find_label_issues
    from aipflow.models import MLP, SmallCNN

    rows = []
    epochs = 5 if quick else 15
    for noise, rate in DIGITS_SETTINGS:
        for seed in seeds:
            _, x, noisy, clean = digits_rows(noise, rate, seed)
            corrupted = (noisy != clean).numpy()
            flat = x.reshape(len(x), -1).numpy()
            torch.manual_seed(seed)
            started = time.perf_counter()
            net = network_probabilities(SmallCNN(10, 1), x, noisy, epochs, seed)
            seconds = time.perf_counter() - started
            torch.manual_seed(seed)
            ivon = network_probabilities(SmallCNN(10, 1), x, noisy, epochs, seed, bayesian=True)
            for method, probs in (
                ("logistic regression (5-fold)", logistic_baseline(flat, noisy.numpy(), seed)),
                (f"aipflow cross-fit SmallCNN, AdamW (5 folds x {epochs} epochs)", net),
                (f"aipflow cross-fit SmallCNN, IVON posterior predictive (10 draws, {epochs} epochs)", ivon),
            ):
                issues = find_label_issues(probs, noisy.numpy())
                rows.append(
                    {
                        "data": f"digits, {noise} {rate:.0%}",
                        "method": method,
                        "seed": seed,
                        "scores": scores(issues.is_issue, corrupted),
                        "seconds": seconds,
                    }
                )
    # a scikit-learn table: make_classification, 5 classes, 20 features, 30 % symmetric noise
    from sklearn.datasets import make_classification

    from aipflow.data import apply_label_noise

    for seed in seeds:
        x, y = make_classification(3000, 20, n_informative=10, n_classes=5, n_clusters_per_class=2, random_state=seed)
        x = (x - x.mean(0)) / x.std(0)
        report = apply_label_noise(torch.from_numpy(y), 5, "symmetric", 0.3, "exact", seed)
        noisy = report.noisy
        corrupted = (noisy != report.clean).numpy()
        torch.manual_seed(seed)
        net = network_probabilities(
            MLP(20, 5, hidden=(64, 64)), torch.from_numpy(x).float(), noisy, 10 if quick else 40, seed
        )
        for method, probs in (
            ("logistic regression (5-fold)", logistic_baseline(x, noisy.numpy(), seed)),
            ("aipflow cross-fit MLP 64-64 (5 folds)", net),
        ):
            issues = find_label_issues(probs, noisy.numpy())
            rows.append(
                {
                    "data": "scikit-learn table (make_classification, 5 classes), symmetric 30 %",
                    "method": method,
                    "seed": seed,
                    "scores": scores(issues.is_issue, corrupted),
                    "seconds": 0,
                }
            )
    return rows


def prune_and_retrain(quick: bool, seeds: list[int]) -> list[dict]:
    from aipflow.data import DigitsDataModule, LabelNoise
    from aipflow.data.curation import Curation
    from aipflow.label_issues import find_label_issues
    from aipflow.models import SmallCNN
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    epochs = 10 if quick else 30
    rows = []
    for seed in seeds:
        _, x, noisy, clean = digits_rows("symmetric", 0.4, seed)
        probs = network_probabilities(SmallCNN(10, 1), x, noisy, 5 if quick else 15, seed)
        issues = find_label_issues(probs, noisy.numpy())
        for variant in ("all noisy labels", "pruned (flagged rows left out)", "clean labels"):
            noise = LabelNoise() if variant == "clean labels" else LabelNoise("symmetric", 0.4, seed=seed)
            dm = DigitsDataModule(label_noise=noise, shuffle_seed=seed)
            if variant.startswith("pruned"):
                dm.setup()
                dm.curate(Curation(exclude_rows=tuple(int(r) for r in dm.train_row_ids[issues.is_issue])))
            torch.manual_seed(seed)
            task = ClassificationTask(SmallCNN(10, 1), num_classes=10)
            trainer = quiet_trainer(max_epochs=epochs, enable_checkpointing=False, num_sanity_val_steps=0)
            trainer.fit(task, dm)
            accuracy = trainer.test(task, dm, verbose=False)[0]["test/acc"]
            rows.append(
                {"variant": variant, "seed": seed, "acc": 100 * accuracy, "flagged": int(issues.is_issue.sum())}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="fewer epochs: a smoke run, not the results")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    found = detection(args.quick, args.seeds)
    retrained = prune_and_retrain(args.quick, args.seeds)
    lines = ["# Label issues: detection and prune-and-retrain", "", __doc__.split("\n\n")[1].strip(), ""]
    lines += [
        "## Detection (precision / recall / F1, %, mean ± std over seeds " + ", ".join(map(str, args.seeds)) + ")",
        "",
        "| data | probabilities | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    keys = []
    for row in found:
        key = (row["data"], row["method"])
        if key not in keys:
            keys.append(key)
    for data, method in keys:
        runs = [r["scores"] for r in found if (r["data"], r["method"]) == (data, method)]
        cells = [mean_std([s[i] for s in runs], 1) for i in range(3)]
        lines.append(f"| {data} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Prune-and-retrain (digits, symmetric 40 %, SmallCNN + AdamW, clean-test accuracy %)",
        "",
        "| training labels | test accuracy | rows flagged |",
        "| --- | --- | --- |",
    ]
    for variant in ("all noisy labels", "pruned (flagged rows left out)", "clean labels"):
        runs = [r for r in retrained if r["variant"] == variant]
        lines.append(
            f"| {variant} | {mean_std([r['acc'] for r in runs], 1)} | "
            f"{mean_std([r['flagged'] for r in runs], 1, 0) if variant.startswith('pruned') else ''} |"
        )
    lines += ["", provenance_markdown()]
    out = RESULTS / ("label_issues_quick.md" if args.quick else "label_issues.md")
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
