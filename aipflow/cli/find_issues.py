"""``aipflow find-issues --config RECIPE [overrides] [--issues.OPTION=VALUE ...] [--output DIR]``: the training
labels that are probably wrong, from out-of-sample probabilities of the recipe's own network (K-fold cross-fitting,
each fold trained as the recipe trains), detected and ranked by cleanlab, or from its training dynamics (the area
under the margin, ``--issues.method=area_under_margin``); writes ``label_issues.csv`` (worst first),
``label_issues_summary.txt`` / ``.json`` and the review page ``label_issues.html``, and prints the summary and the
cost as a multiple of one fit."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["find_issues_command"]

USAGE = (
    "usage: aipflow find-issues --config RECIPE [overrides] [--issues.method=cross_fit|area_under_margin] "
    "[--issues.folds=5] [--issues.epochs=N] "
    "[--issues.filter_by=prune_by_noise_rate] [--issues.score=self_confidence] [--issues.seed=0] "
    "[--issues.batch_size=64] [--issues.stream_rows=N] [--issues.posterior_samples=0] [--issues.aum_percentile=99] "
    "[--issues.aum_runs=2] [--output DIR]"
)


def _split(argv: list[str]) -> tuple[list[str], dict[str, str], Path]:
    """The LightningCLI part of ``argv``, the ``--issues.*`` options and the output folder."""
    from aipflow.cli.errors import UsageError

    rest, options, output = [], {}, Path("label_issues")
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, _, value = arg.partition("=")
        takes_next = not _ and i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if key.startswith("--issues.") or key == "--output":
            if not _ and not takes_next:
                raise UsageError(f"{key} needs a value\n{USAGE}")
            value = value if _ else argv[i + 1]
            if key == "--output":
                output = Path(value)
            else:
                options[key[len("--issues.") :]] = value
            i += 1 if _ else 2
            continue
        rest.append(arg)
        i += 1
    return rest, options, output


def find_issues_command(argv: list[str]) -> int:
    from aipflow.cli.errors import UsageError
    from aipflow.cli.run import _option_values
    from aipflow.label_issues import write_label_issues
    from aipflow.lightning.label_issue_pruning import IssueSearch, search_label_issues

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print(IssueSearch.__doc__)
        return 0
    rest, options, output = _split(argv)
    configs = _option_values(rest, "--config") + _option_values(rest, "-c")
    if not configs:
        raise UsageError(f"aipflow find-issues needs --config RECIPE\n{USAGE}")
    search = IssueSearch.from_strings(options)
    from aipflow.cli.run import build

    cli = build([*rest, "--trainer.logger=false", "--trainer.enable_checkpointing=false"])
    started = time.perf_counter()
    issues, previews, fit_epochs = search_label_issues(cli.model, cli.datamodule, cli.trainer, search)
    elapsed = time.perf_counter() - started
    written = write_label_issues(issues, output, previews, title=f"Label issues: {Path(configs[0]).stem}")
    cost = search.cost_in_fits(fit_epochs)
    print(issues.summary())
    print(
        f"cost: {elapsed:.1f} s for {_trainings(search)} x {search.epochs_for(fit_epochs)} epochs, about {cost:.1f} "
        f"fits of the recipe ({fit_epochs} epochs on all the rows)"
    )
    for name, path in written.items():
        print(f"wrote {path}" + ("  (open it in a browser to review)" if name.endswith(".html") else ""))
    return 0


def _trainings(search) -> str:
    if search.method == "area_under_margin":
        return f"{search.aum_runs} runs"
    return f"{search.folds} folds"
