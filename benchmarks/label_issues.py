"""Label-issue detection and prune-and-retrain, over seeds.

Detection: precision / recall / F1 of the flagged rows against the rows the noise generator corrupted, for
- cleanlab's documented baseline: scikit-learn ``LogisticRegression`` out-of-sample probabilities by
  ``cross_val_predict`` (5 folds) on the standardised features, then the same detector;
- aipflow's cross-fit network (``aipflow find-issues``'s path): 5 copies of the task's network, each trained on 4
  folds with the task's optimizer (digits: SmallCNN + AdamW 1e-3, 15 epochs; the table: MLP 64-64, 40 epochs);
- on digits also with IVON (the quickstart recipe's settings), each fold predicted by its posterior predictive over
  10 draws (``--issues.posterior_samples=10``);
- aipflow's area under the margin (Pleiss et al. 2020, ``--issues.method=area_under_margin``): the same network and
  optimizer trained twice on every row (same epochs), each time with N/(c+1) threshold samples given an extra
  class, rows flagged below the threshold samples' 99th percentile.
The probabilities go through ``aipflow.label_issues.find_label_issues`` (cleanlab's ``prune_by_noise_rate``).
Time: the detection's wall time (training included) on this machine, nothing else running.

Prune-and-retrain (digits, symmetric 40 %): clean-test accuracy of the same network and schedule (SmallCNN, AdamW,
30 epochs) trained on every noisy label, on the rows left after leaving out each detector's flagged rows, and on the
clean labels.

    python -m benchmarks.label_issues [--seeds 0 1 2] [--quick]

Writes benchmarks/results/label_issues.md.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from functools import partial
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


def aum_issues(network, x: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int):
    """The area under the margin (Pleiss et al. 2020): two runs of the network on every row with AdamW 1e-3, each
    with its N/(c+1) threshold samples, flagged below their 99th percentile."""
    from aipflow.lightning.area_under_margin import area_under_margin
    from aipflow.tasks import ClassificationTask

    optimizer = partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
    task = ClassificationTask(network, num_classes=int(labels.max()) + 1, optimizer=optimizer)
    rows = [{"x": x[i], "y": labels[i]} for i in range(len(labels))]
    return area_under_margin(task, rows, labels, epochs, 64, seed).label_issues(labels.numpy())


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
            timed = {}
            started = time.perf_counter()
            baseline = logistic_baseline(flat, noisy.numpy(), seed)
            timed["logistic regression (5-fold)"] = (find_label_issues(baseline, noisy.numpy()), started)
            torch.manual_seed(seed)
            started = time.perf_counter()
            net = network_probabilities(SmallCNN(10, 1), x, noisy, epochs, seed)
            timed[f"aipflow cross-fit SmallCNN, AdamW (5 folds x {epochs} epochs)"] = (
                find_label_issues(net, noisy.numpy()),
                started,
            )
            torch.manual_seed(seed)
            started = time.perf_counter()
            ivon = network_probabilities(SmallCNN(10, 1), x, noisy, epochs, seed, bayesian=True)
            timed[f"aipflow cross-fit SmallCNN, IVON posterior predictive (10 draws, {epochs} epochs)"] = (
                find_label_issues(ivon, noisy.numpy()),
                started,
            )
            torch.manual_seed(seed)
            started = time.perf_counter()
            aum = aum_issues(SmallCNN(10, 1), x, noisy, epochs, seed)
            timed[f"aipflow area under the margin, SmallCNN, AdamW (2 runs x {epochs} epochs)"] = (aum, started)
            ends = [t for _, t in timed.values()][1:] + [time.perf_counter()]
            for (method, (issues, start)), end in zip(timed.items(), ends, strict=True):
                rows.append(
                    {
                        "data": f"digits, {noise} {rate:.0%}",
                        "method": method,
                        "seed": seed,
                        "scores": scores(issues.is_issue, corrupted),
                        "seconds": end - start,
                        "flags": issues.is_issue if (noise, rate) == ("symmetric", 0.4) else None,
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
        torch.manual_seed(seed)
        aum = aum_issues(MLP(20, 5, hidden=(64, 64)), torch.from_numpy(x).float(), noisy, 10 if quick else 40, seed)
        for method, issues in (
            ("logistic regression (5-fold)", find_label_issues(logistic_baseline(x, noisy.numpy(), seed), noisy)),
            ("aipflow cross-fit MLP 64-64 (5 folds)", find_label_issues(net, noisy.numpy())),
            ("aipflow area under the margin, MLP 64-64 (2 runs)", aum),
        ):
            rows.append(
                {
                    "data": "scikit-learn table (make_classification, 5 classes), symmetric 30 %",
                    "method": method,
                    "seed": seed,
                    "scores": scores(issues.is_issue, corrupted),
                    "seconds": float("nan"),
                }
            )
    return rows


def prune_and_retrain(quick: bool, seeds: list[int], found: list[dict]) -> list[dict]:
    """Clean-test accuracy of the same network and schedule trained on every noisy label, on the rows left after
    leaving out each detector's flagged rows (from the detection above, symmetric 40 %), and on the clean labels."""
    from aipflow.data import DigitsDataModule, LabelNoise
    from aipflow.data.curation import Curation
    from aipflow.models import SmallCNN
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    epochs = 10 if quick else 30
    rows = []
    for seed in seeds:
        flagged = {
            f"pruned by {r['method'].split(' (')[0].replace('aipflow ', '')}": r["flags"]
            for r in found
            if r["seed"] == seed and r.get("flags") is not None
        }
        for variant in ("all noisy labels", *flagged, "clean labels"):
            noise = LabelNoise() if variant == "clean labels" else LabelNoise("symmetric", 0.4, seed=seed)
            dm = DigitsDataModule(label_noise=noise, shuffle_seed=seed)
            if variant in flagged:
                dm.setup()
                dm.curate(Curation(exclude_rows=tuple(int(r) for r in dm.train_row_ids[flagged[variant]])))
            torch.manual_seed(seed)
            task = ClassificationTask(SmallCNN(10, 1), num_classes=10)
            trainer = quiet_trainer(max_epochs=epochs, enable_checkpointing=False, num_sanity_val_steps=0)
            trainer.fit(task, dm)
            accuracy = trainer.test(task, dm, verbose=False)[0]["test/acc"]
            count = int(flagged[variant].sum()) if variant in flagged else None
            rows.append({"variant": variant, "seed": seed, "acc": 100 * accuracy, "flagged": count})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="fewer epochs: a smoke run, not the results")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    found = detection(args.quick, args.seeds)
    retrained = prune_and_retrain(args.quick, args.seeds, found)
    lines = ["# Label issues: detection and prune-and-retrain", "", __doc__.split("\n\n")[1].strip(), ""]
    lines += [
        "## Detection (precision / recall / F1, %, mean ± std over seeds " + ", ".join(map(str, args.seeds)) + ")",
        "",
        "| data | evidence | precision | recall | F1 | time (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    keys = []
    for row in found:
        key = (row["data"], row["method"])
        if key not in keys:
            keys.append(key)
    for data, method in keys:
        runs = [r["scores"] for r in found if (r["data"], r["method"]) == (data, method)]
        cells = [mean_std([s[i] for s in runs], 1) for i in range(3)]
        seconds = [r["seconds"] for r in found if (r["data"], r["method"]) == (data, method)]
        cells.append("" if np.isnan(seconds).any() else f"{np.mean(seconds):.0f}")
        lines.append(f"| {data} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Prune-and-retrain (digits, symmetric 40 %, SmallCNN + AdamW 30 epochs, clean-test accuracy %)",
        "",
        "| training labels | test accuracy | rows flagged |",
        "| --- | --- | --- |",
    ]
    for variant in dict.fromkeys(r["variant"] for r in retrained):
        runs = [r for r in retrained if r["variant"] == variant]
        counts = [r["flagged"] for r in runs if r["flagged"] is not None]
        flagged = mean_std(counts, 1, 0) if counts else ""
        lines.append(f"| {variant} | {mean_std([r['acc'] for r in runs], 1)} | {flagged} |")
    lines += ["", provenance_markdown()]
    out = RESULTS / ("label_issues_quick.md" if args.quick else "label_issues.md")
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
