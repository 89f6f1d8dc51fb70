"""Label issues on text: BBC News (5 topics, 1,780 training articles) with 40 % symmetric noise, LoRA fine-tuning of
all-MiniLM-L6-v2 through the fine-tuning plugin (the recipe ``finetune/minilm_lora_bbc``: LoRA r 8 on query and value,
texts cut to 64 tokens, batch 32, CE + AdamW at 3e-3, 3 epochs).

Detection (precision / recall / F1 of the flagged rows against the rows the noise generator corrupted):
- cleanlab's documented baseline for text: scikit-learn ``TfidfVectorizer`` features (sublinear tf, words and
  bigrams) and ``LogisticRegression`` out-of-sample probabilities by ``cross_val_predict`` (5 folds), then
  ``aipflow.label_issues.find_label_issues`` (cleanlab's ``prune_by_noise_rate``);
- ``aipflow find-issues``'s path with ``--issues.method=area_under_margin``: two LoRA fine-tunings of the recipe's
  network on every row (3 epochs each), each with N/(c+1) threshold samples given an extra class, rows flagged
  below the threshold samples' 99th percentile.

Prune-and-retrain (``--retrain_seeds``): clean-test accuracy of the recipe trained on every noisy label, on the rows
left after leaving out the area under the margin's flags, and on the clean labels.

    python -m benchmarks.label_issues_text [--seeds 0 1 2] [--retrain_seeds 0]

Writes benchmarks/results/label_issues_text.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks._provenance import mean_std, provenance_markdown
from benchmarks.label_issues import logistic_baseline, scores

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"
EPOCHS, MAX_LENGTH, LR = 3, 64, 0.003


def recipe_argv(seed: int, noise: float) -> list[str]:
    from benchmarks._runs import quiet_fit_options

    argv = [
        "--config",
        "finetune/minilm_lora_bbc",
        f"--seed_everything={seed}",
        f"--trainer.max_epochs={EPOCHS}",
        f"--model.init_args.lr_scheduler.init_args.T_max={EPOCHS}",
        "--model.init_args.loss=CE",
        "--model.init_args.optimizer=AdamW",
        f"--model.init_args.optimizer.lr={LR}",
        f"--data.collator.max_length={MAX_LENGTH}",
        f"--data.label_noise.seed={seed}",
        f"--data.shuffle_seed={seed}",
        "--trainer.callbacks=[]",
        "--trainer.limit_val_batches=0",
        *quiet_fit_options(tempfile.mkdtemp(prefix="label_issues_text_")),
    ]
    if noise:
        argv += ["--data.label_noise.kind=symmetric", f"--data.label_noise.rate={noise}"]
        argv += ["--data.label_noise.convention=exact"]
    return argv


def detection(seed: int) -> tuple[list[dict], np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from aipflow.cli.run import build
    from aipflow.label_issues import find_label_issues
    from aipflow.lightning import IssueSearch, search_label_issues

    cli = build(recipe_argv(seed, 0.4))
    dm = cli.datamodule
    dm.setup("fit")
    train = dm.train_set
    noisy, clean = train.y.numpy(), train.clean_y.numpy()
    corrupted = noisy != clean
    texts = [train[i]["text"] for i in range(len(train))]
    started = time.perf_counter()
    features = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2).fit_transform(texts)
    baseline = find_label_issues(logistic_baseline(features, noisy, seed), noisy)
    rows = [
        {
            "method": "logistic regression on TF-IDF (5-fold)",
            "scores": scores(baseline.is_issue, corrupted),
            "seconds": time.perf_counter() - started,
        }
    ]
    started = time.perf_counter()
    search = IssueSearch(method="area_under_margin", epochs=EPOCHS, batch_size=32, seed=seed)
    issues, _, _ = search_label_issues(cli.model, dm, None, search)
    rows.append(
        {
            "method": f"aipflow area under the margin, MiniLM LoRA, AdamW (2 runs x {EPOCHS} epochs)",
            "scores": scores(issues.is_issue, corrupted),
            "seconds": time.perf_counter() - started,
        }
    )
    return rows, np.asarray(dm.train_row_ids)[issues.is_issue]


def retrain(seed: int, noise: float, exclude: np.ndarray | None) -> float:
    from aipflow.cli.run import build
    from aipflow.data.curation import Curation

    cli = build(recipe_argv(seed, noise))
    if exclude is not None:
        cli.datamodule.setup("fit")
        cli.datamodule.curate(Curation(exclude_rows=tuple(int(r) for r in exclude)))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return 100 * float(cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]["test/acc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--retrain_seeds", type=int, nargs="*", default=[0])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    found, flags = [], {}
    for seed in args.seeds:
        rows, flags[seed] = detection(seed)
        found += [{**r, "seed": seed} for r in rows]
        print(rows, flush=True)
    retrained = []
    for seed in args.retrain_seeds:
        for variant, noise, exclude in (
            ("all noisy labels", 0.4, None),
            ("pruned by area under the margin", 0.4, flags[seed]),
            ("clean labels", 0.0, None),
        ):
            retrained.append({"variant": variant, "seed": seed, "acc": retrain(seed, noise, exclude)})
            print(retrained[-1], flush=True)
    lines = ["# Label issues on text: BBC News, 40 % symmetric noise", "", __doc__.split("\n\n")[0].strip(), ""]
    lines += [__doc__.split("\n\n")[1].strip(), ""]
    lines += [
        "## Detection (%, mean ± std over seeds " + ", ".join(map(str, args.seeds)) + ")",
        "",
        "| evidence | precision | recall | F1 | time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method in dict.fromkeys(r["method"] for r in found):
        runs = [r for r in found if r["method"] == method]
        cells = [mean_std([r["scores"][i] for r in runs], 1) for i in range(3)]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean([r['seconds'] for r in runs]):.0f} |")
    if retrained:
        lines += [
            "",
            "## Prune-and-retrain (clean-test accuracy %, seeds " + ", ".join(map(str, args.retrain_seeds)) + ")",
            "",
            "| training labels | test accuracy |",
            "| --- | --- |",
        ]
        for variant in dict.fromkeys(r["variant"] for r in retrained):
            lines.append(f"| {variant} | {mean_std([r['acc'] for r in retrained if r['variant'] == variant], 1)} |")
    lines += ["", provenance_markdown()]
    (RESULTS / "label_issues_text.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
