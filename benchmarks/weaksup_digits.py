"""PU learning on digits (even vs odd, 100 labelled positives, the rest unlabelled; aipflow-weaksup's
PUDigitsDataModule, two-sample convention): nnPU, uPU and supervised PN with the plugin's recipes' settings, and
the Elkan-Noto prior estimates, over 5 seeds (mean +- std).

Each run reports the test error of the checkpoint chosen by the weak validation risk (no clean labels) and of the
last epoch: uPU's overfitting (its empirical risk goes negative) shows at the last epoch, which nnPU prevents.

    python benchmarks/weaksup_digits.py [--seeds 5] [--epochs 50]

Writes benchmarks/results/weaksup_digits.md and .csv.
"""

from __future__ import annotations

import argparse
import csv
import functools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from aipflow.models import MLP

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "nnPU": "error <= 9 %",
    "uPU": "error >= 20 % (last epoch)",
    "PN": "error <= 2 %",
    "nnPU, estimated prior": "at most 2 points worse than nnPU",
}


def run(method: str, seed: int, epochs: int, batch_size: int = 128, lr: float = 1e-3, wd: float = 5e-3) -> dict:
    from aipflow_weaksup.data import PUDigitsDataModule
    from aipflow_weaksup.risks.pu import PNRisk, PURisk
    from aipflow_weaksup.task import WeakBinaryTask

    L.seed_everything(seed, verbose=False)
    dm = PUDigitsDataModule(n_labeled=100, batch_size=batch_size, label_seed=seed)
    risk = PNRisk(loss="sigmoid") if method == "PN" else PURisk(estimator="upu" if method == "uPU" else "nnpu")
    estimator = "e1" if method == "nnPU, estimated prior" else None
    optimizer = functools.partial(torch.optim.Adam, lr=lr, weight_decay=wd)
    task = WeakBinaryTask(MLP(64, 1, hidden=[100, 100]), risk, optimizer=optimizer, prior_estimator=estimator)
    if method == "PN":  # fully supervised: every training label known
        dm.setup()
        dm.train_set.s = (dm.train_set.y == 1).long()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp, monitor="val/weak_risk", mode="min")
        trainer = L.Trainer(
            max_epochs=epochs,
            logger=False,
            callbacks=[ckpt],
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
            accelerator="cpu",
        )
        start = time.perf_counter()
        trainer.fit(task, dm)
        seconds = time.perf_counter() - start
        last = trainer.test(task, dm, verbose=False)[0]["test/error"]
        best = trainer.test(task, dm, ckpt_path=ckpt.best_model_path, verbose=False, weights_only=False)
        best = best[0]["test/error"]
    return dict(
        method=method,
        seed=seed,
        selected_error=100 * best,
        last_error=100 * last,
        prior_true=dm.prior,
        prior_used=task.risk.prior if hasattr(task.risk, "prior") else None,
        seconds=seconds,
    )


def prior_rows(seed: int) -> list[dict]:
    from aipflow_weaksup.data import PUDigitsDataModule
    from aipflow_weaksup.prior import METHODS, elkan_noto_prior

    dm = PUDigitsDataModule(n_labeled=100, label_seed=seed)
    dm.setup()
    rows = []
    for method in METHODS:
        est = elkan_noto_prior(dm.train_set.x.numpy(), dm.train_set.s.numpy(), method, seed=seed)
        rows.append(dict(estimator=f"Elkan-Noto {method}", seed=seed, estimate=est.prior, truth=dm.prior))
    return rows


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    seeds = list(range(args.seeds))
    runs = []
    for method in TARGETS:
        for seed in seeds:
            row = run(method, seed, args.epochs)
            print(row, flush=True)
            runs.append(row)
    priors = [r for seed in seeds for r in prior_rows(seed)]

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "weaksup_digits.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    lines = [
        "# aipflow-weaksup on digits: PU learning, even vs odd",
        "",
        "100 labelled positives, the rest of the training split unlabelled (two-sample convention), MLP 64-100-100-1,",
        f"sigmoid loss, Adam lr 1e-3 wd 5e-3, batch 128, {args.epochs} epochs; seeds {seeds} (split fixed, labelled",
        "positives, initialisation and order vary). Test error in %, mean +- std. `selected`: the checkpoint with",
        "the lowest weak validation risk (uPU risk on weakly labelled validation data: no clean labels used);",
        "`last`: the last epoch. Written by benchmarks/weaksup_digits.py.",
        "",
        "| method | target | met | selected | last | prior used | s per run |",
        "|---|---|---|---|---|---|---|",
    ]

    def mean_of(method, key):
        return statistics.mean(r[key] for r in runs if r["method"] == method)

    met = {
        "nnPU": mean_of("nnPU", "selected_error") <= 9,
        "uPU": mean_of("uPU", "last_error") >= 20,
        "PN": mean_of("PN", "selected_error") <= 2,
        "nnPU, estimated prior": mean_of("nnPU, estimated prior", "selected_error")
        <= mean_of("nnPU", "selected_error") + 2,
    }
    for method, target in TARGETS.items():
        rs = [r for r in runs if r["method"] == method]
        used = [r["prior_used"] for r in rs if r["prior_used"] is not None]
        lines.append(
            f"| {method} | {target} | {'yes' if met[method] else '**no**'} | "
            f"{mean_std([r['selected_error'] for r in rs])} | {mean_std([r['last_error'] for r in rs])} | "
            f"{statistics.mean(used):.3f} | {statistics.mean(r['seconds'] for r in rs):.0f} |"
        )
    lines += [
        "",
        "Class-prior estimates of the unlabelled set (target: within +-0.05 of the truth):",
        "",
        "| estimator | estimate | truth | abs error |",
        "|---|---|---|---|",
    ]
    for name in sorted({p["estimator"] for p in priors}):
        ps = [p for p in priors if p["estimator"] == name]
        err = [abs(p["estimate"] - p["truth"]) for p in ps]
        lines.append(
            f"| {name} | {statistics.mean(p['estimate'] for p in ps):.3f} +- "
            f"{statistics.stdev(p['estimate'] for p in ps) if len(ps) > 1 else 0:.3f} | "
            f"{statistics.mean(p['truth'] for p in ps):.3f} | {statistics.mean(err):.3f} (max {max(err):.3f}) |"
        )
    (RESULTS / "weaksup_digits.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
