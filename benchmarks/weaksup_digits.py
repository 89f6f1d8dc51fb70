"""aipflow-weaksup on digits: every weak-supervision setting of the plugin, run from its recipes, over seeds.

Each row is a recipe (`aipflow recipes` lists them; some rows override one option of a recipe) run with
``seed_everything`` and the weak labels' ``label_seed`` set to each seed (the train / validation / test split
stays fixed). Reported: the clean test metric of the checkpoint chosen by the weak validation risk (no clean
label used for selection) and of the last epoch, mean +- std over seeds; and the class-prior estimators' error.

    python -m benchmarks.weaksup_digits [--seeds 0 1 2 3 4] [--only pu binary complementary partial prior]

Writes benchmarks/results/weaksup_digits.md and .csv.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks._provenance import provenance_markdown

RESULTS = Path(__file__).resolve().parent / "results"
RISK = "--model.init_args.risk.init_args"
LOSS = "--model.init_args.loss.init_args"
MLP_100_100 = (
    '--model.init_args.model={"class_path": "aipflow.models.MLP", '
    '"init_args": {"num_classes": 1, "hidden": [100, 100]}}'
)
MLP_256_256 = (
    '--model.init_args.model={"class_path": "aipflow.models.MLP", '
    '"init_args": {"num_classes": 10, "hidden": [256, 256]}}'
)
SHOWN = {  # how a long override is shown in the table
    MLP_100_100: "model=MLP hidden [100, 100]",
    MLP_256_256: "model=MLP hidden [256, 256]",
}

# (group, row name, recipe, extra arguments, target text, check on the mean selected / last metric)
ROWS = [
    ("pu", "nnPU (paper convention)", "pu_nnpu", [], "error <= 9 %", lambda s, last: s <= 9),
    ("pu", "nnPU (plain max)", "pu_nnpu", [f"{RISK}.convention=max"], "", None),
    ("pu", "nnPU (whole-risk ascent)", "pu_nnpu", [f"{RISK}.convention=whole"], "", None),
    ("pu", "absPU", "pu_nnpu", [f"{RISK}.estimator=abspu"], "", None),
    ("pu", "uPU", "pu_upu", [], "error >= 20 % (last epoch)", lambda s, last: last >= 20),
    ("pu", "PN (fully supervised)", "pu_pn", [], "error <= 2 %", lambda s, last: s <= 2),
    ("pu", "nnPU, prior estimated (BBE, the default)", "pu_nnpu_prior_auto", [], "<= nnPU + 2 points", "nnpu+2"),
    ("pu", "nnPU, prior estimated (KM2)", "pu_nnpu_prior_auto", ["--model.init_args.prior_estimator=km2"], "", None),
    ("pu", "nnPU, one-sample data", "pu_nnpu", ["--data.init_args.setting=one_sample"], "", None),
    ("pu", "nnPU, 200 labelled positives", "pu_nnpu", ["--data.init_args.n_labeled=200"], "", None),
    ("pu", "nnPU, MLP 64-100-100-1 instead of the CNN", "pu_nnpu", [MLP_100_100], "", None),
    ("pu", "uPU, MLP 64-100-100-1 instead of the CNN", "pu_upu", [MLP_100_100], "", None),
    ("binary", "PNU (eta = 0.5)", "pnu", [], "", None),
    ("binary", "UU", "uu", [], "", None),
    ("binary", "nnUU (ReLU)", "nnuu", [], "", None),
    ("binary", "SU", "su", [], "", None),
    ("binary", "SD", "sd", [], "", None),
    ("binary", "Pcomp (unbiased)", "pcomp_relu", [f"{RISK}.correction=none"], "", None),
    ("binary", "Pcomp (ReLU)", "pcomp_relu", [], "", None),
    ("binary", "Pcomp (abs)", "pcomp_relu", [f"{RISK}.correction=abs"], "", None),
    ("binary", "Pconf", "pconf", [], "", None),
    ("complementary", "SCL-NL", "complementary_scl_nl", [], "accuracy >= 60 %", lambda s, last: s >= 60),
    ("complementary", "SCL-EXP", "complementary_scl_nl", [f"{LOSS}.kind=scl_exp"], "", None),
    ("complementary", "PC", "complementary_scl_nl", [f"{LOSS}.kind=pc"], "", None),
    ("complementary", "forward (uniform Q)", "complementary_scl_nl", [f"{LOSS}.kind=forward"], "", None),
    ("complementary", "unbiased (free)", "complementary_unbiased_max", [f"{LOSS}.correction=free"], "", None),
    ("complementary", "unbiased (max)", "complementary_unbiased_max", [], "", None),
    ("complementary", "unbiased (gradient ascent)", "complementary_unbiased_max", [f"{LOSS}.correction=ga"], "", None),
    ("complementary", "biased labels: forward with Q", "complementary_biased_forward", [], "", None),
    ("complementary", "biased labels: SCL-NL", "complementary_biased_forward", [f"{LOSS}.kind=scl_nl"], "", None),
    ("complementary", "3 labels: ub_log", "complementary_multiple_ub_log", [], "", None),
    ("complementary", "3 labels: ub_exp", "complementary_multiple_ub_log", [f"{LOSS}.kind=ub_exp"], "", None),
    (
        "complementary",
        "3 labels: unbiased (max)",
        "complementary_multiple_ub_log",
        [f"{LOSS}.kind=unbiased", f"{LOSS}.correction=max"],
        "",
        None,
    ),
    ("partial", "CC", "partial_cc", [], "accuracy >= 96.5 %", lambda s, last: s >= 96.5),
    ("partial", "PRODEN", "partial_proden", [], "accuracy >= 96.5 %", lambda s, last: s >= 96.5),
    ("partial", "RC", "partial_rc", [], "", None),
    ("partial", "LWS (beta = 1)", "partial_lws", [], "", None),
    ("partial", "PRODEN, pair flipping", "partial_proden", ["--data.init_args.partial=pair"], "", None),
    ("partial", "CC, MLP 64-256-256-10, 100 epochs", "partial_cc", [MLP_256_256, "--trainer.max_epochs=100"], "", None),
    (
        "partial",
        "PRODEN, MLP 64-256-256-10, 100 epochs",
        "partial_proden",
        [MLP_256_256, "--trainer.max_epochs=100"],
        "",
        None,
    ),
]
GROUPS = {
    "pu": "PU: even vs odd, 100 labelled positives, the rest unlabelled (two-sample), prior known unless said; "
    "SmallCNN (width 32) unless said; test error %",
    "binary": "Other binary settings (even vs odd; SU / SD: digits 0-6 vs 7-9, pi ~ 0.7); test error %",
    "complementary": "Complementary labels (10 classes; one uniform label unless said); test accuracy %",
    "partial": "Partial labels (10 classes, q = 0.3, binomial unless said; SmallCNN unless said); test accuracy %",
}
# row name -> (estimator, whether BBE scores with the PU recipes' network, SmallCNN width 32, or logistic regression)
PRIOR_METHODS = {
    "e1": ("e1", False),
    "e2": ("e2", False),
    "e3": ("e3", False),
    "km1": ("km1", False),
    "km2": ("km2", False),
    "tice": ("tice", False),
    "bbe (logistic regression)": ("bbe", False),
    "bbe (SmallCNN: prior: auto in the recipes)": ("bbe", True),
}


def recipe_argv(recipe: str, extra: list[str], seed: int, root: str) -> list[str]:
    """``aipflow fit`` arguments for one seeded, quiet run of a weaksup recipe (files under ``root``)."""
    return [
        "fit",
        "--config",
        f"weaksup/{recipe}",
        *extra,
        f"--seed_everything={seed}",
        f"--data.init_args.label_seed={seed}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--test_after_fit=false",
    ]


def one_run(recipe: str, extra: list[str], seed: int) -> dict:
    from aipflow.cli import run

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cli = run(recipe_argv(recipe, [*extra, "--trainer.logger=false"], seed, tmp))
        seconds = time.perf_counter() - start
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        key = "test/error" if hasattr(model, "risk") else "test/acc"
        last = trainer.test(model, dm, verbose=False)[0][key]  # the weights of the last epoch
        best = trainer.test(model, dm, ckpt_path="best", verbose=False, weights_only=False)[0][key]
    prior = getattr(getattr(model, "risk", None), "prior", None)
    return dict(selected=100 * best, last=100 * last, seconds=seconds, prior_used=prior)


def prior_rows(seed: int, n_bootstrap: int) -> list[dict]:
    from aipflow_weaksup.data import PUDigitsDataModule
    from aipflow_weaksup.prior import estimate_prior

    from aipflow.models import SmallCNN

    dm = PUDigitsDataModule(n_labeled=100, label_seed=seed)
    dm.setup()
    x, s = dm.train_set.x.numpy(), dm.train_set.s.numpy()
    rows = []
    for name, (method, network) in PRIOR_METHODS.items():
        start = time.perf_counter()
        classifier = SmallCNN(num_classes=1, width=32) if network else None
        est = estimate_prior(x, s, method, n_bootstrap=n_bootstrap, seed=seed, classifier=classifier)
        lo, hi = est.interval if est.interval else (float("nan"), float("nan"))
        rows.append(
            dict(
                estimator=name,
                seed=seed,
                estimate=est.prior,
                truth=dm.prior,
                low=lo,
                high=hi,
                seconds=time.perf_counter() - start,
            )
        )
        print(rows[-1], flush=True)
    return rows


RUN_NUMBERS = ("seed", "selected", "last", "seconds", "prior_used")
PRIOR_NUMBERS = ("seed", "estimate", "truth", "low", "high", "seconds")


def read_csv(name: str, float_keys: tuple[str, ...]) -> list[dict]:
    path = RESULTS / name
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in float_keys:
            row[key] = float(row[key]) if row.get(key) not in (None, "") else None
        row["seed"] = int(row["seed"])
    return rows


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", default=[*GROUPS, "prior"], choices=[*GROUPS, "prior"])
    parser.add_argument("--bootstrap", type=int, default=10, help="bootstrap resamples per prior estimate")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(2)
    runs = []
    for group, name, recipe, extra, _, _ in ROWS:
        if group not in args.only:
            continue
        for seed in args.seeds:
            row = dict(group=group, method=name, recipe=recipe, seed=seed, **one_run(recipe, extra, seed))
            print(row, flush=True)
            runs.append(row)
    priors = [r for seed in args.seeds for r in prior_rows(seed, args.bootstrap)] if "prior" in args.only else []
    # groups not run this time keep their rows from the previous results, so one group can be rerun alone
    runs = [r for r in read_csv("weaksup_digits.csv", float_keys=RUN_NUMBERS) if r["group"] not in args.only] + runs
    if "prior" not in args.only:
        priors = read_csv("weaksup_digits_prior.csv", float_keys=PRIOR_NUMBERS)

    RESULTS.mkdir(exist_ok=True)
    if runs:
        with open(RESULTS / "weaksup_digits.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(runs[0]))
            writer.writeheader()
            writer.writerows(runs)
    if priors:
        with open(RESULTS / "weaksup_digits_prior.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(priors[0]))
            writer.writeheader()
            writer.writerows(priors)
    lines = [
        "# aipflow-weaksup on digits",
        "",
        f"Every row runs a recipe of the plugin (`weaksup/<recipe>`, with the option shown overridden) for seeds "
        f"{args.seeds}: `seed_everything` and the weak labels' `label_seed` vary, the split is fixed. `selected`: "
        "the checkpoint with the lowest weak validation risk (the setting's own unbiased estimator on weakly "
        "labelled validation data: no clean label used; the fully supervised PN baseline, which has every label, "
        "on clean validation error); `last`: the last epoch. Mean +- std over seeds. CPU "
        "(2 cores). Written by `benchmarks/weaksup_digits.py`.",
    ]

    def mean_of(method, key):
        return statistics.mean(r[key] for r in runs if r["method"] == method)

    for group, title in GROUPS.items():
        rows = [r for r in ROWS if r[0] == group and any(x["method"] == r[1] for x in runs)]
        if not rows:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            "| method | recipe | target | met | selected | last | s per run |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, name, recipe, extra, target, check in rows:
            rs = [r for r in runs if r["method"] == name]
            sel, last = mean_of(name, "selected"), mean_of(name, "last")
            if check == "nnpu+2":
                met = sel <= mean_of("nnPU (paper convention)", "selected") + 2
            else:
                met = check(sel, last) if check else None
            shown = "" if met is None else ("yes" if met else "**no**")
            recipe_text = recipe + "".join(f" `{SHOWN.get(e, e.split('init_args.')[-1])}`" for e in extra)
            lines.append(
                f"| {name} | {recipe_text} | {target} | {shown} | {mean_std([r['selected'] for r in rs])} | "
                f"{mean_std([r['last'] for r in rs])} | {statistics.mean(r['seconds'] for r in rs):.0f} |"
            )
        if group == "pu":
            truth = [r["prior_used"] for r in runs if r["method"] == "nnPU (paper convention)"]
            shown = []
            for method, label in (
                ("nnPU, prior estimated (BBE, the default)", "BBE"),
                ("nnPU, prior estimated (KM2)", "KM2"),
            ):
                used = [r["prior_used"] for r in runs if r["method"] == method]
                if used:
                    spread = statistics.stdev(used) if len(used) > 1 else 0.0
                    shown.append(f"{label} estimate {statistics.mean(used):.3f} +- {spread:.3f}")
            if truth and shown:
                lines += ["", f"Prior used: true {statistics.mean(truth):.3f}, " + ", ".join(shown) + "."]
    if priors:
        lines += [
            "",
            "## Class-prior estimation (PU training split above; target: within +-0.05 of the truth)",
            "",
            f"95 % bootstrap intervals from {args.bootstrap} stratified resamples; `covers`: how many of the seeds' "
            "intervals contain the truth.",
            "",
            "| estimator | estimate | truth | mean abs error | max abs error | within 0.05 | covers | s per estimate |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in PRIOR_METHODS:
            ps = [p for p in priors if p["estimator"] == method]
            err = [abs(p["estimate"] - p["truth"]) for p in ps]
            covers = sum(p["low"] <= p["truth"] <= p["high"] for p in ps)
            spread = statistics.stdev(p["estimate"] for p in ps) if len(ps) > 1 else 0.0
            lines.append(
                f"| {method} | {statistics.mean(p['estimate'] for p in ps):.3f} +- {spread:.3f} | "
                f"{statistics.mean(p['truth'] for p in ps):.3f} | {statistics.mean(err):.3f} | {max(err):.3f} | "
                f"{sum(e <= 0.05 for e in err)}/{len(err)} | {covers}/{len(ps)} | "
                f"{statistics.mean(p['seconds'] for p in ps):.1f} |"
            )
    lines += ["", provenance_markdown()]
    (RESULTS / "weaksup_digits.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
