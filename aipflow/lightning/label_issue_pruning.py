"""Finding the wrong training labels with the task's own network, and Northcutt et al.'s prune-and-retrain in one
``aipflow fit``: :class:`IssueSearch` (how: K-fold cross-fitting, each fold trained as the recipe trains, then
cleanlab's detection), :func:`search_label_issues` (what ``aipflow find-issues`` runs) and the callback
:class:`LabelIssuePruning` (find -> leave out or relabel -> train)."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from aipflow.data.curation import Curation
from aipflow.label_issues import FILTERS, SCORES, LabelIssues, find_label_issues
from aipflow.lightning.area_under_margin import area_under_margin
from aipflow.lightning.area_under_margin import check_options as check_aum_options
from aipflow.lightning.cross_fit import out_of_fold_posteriors, training_rows

__all__ = ["ACTIONS", "METHODS", "IssueSearch", "LabelIssuePruning", "search_label_issues"]

#: where the search's evidence comes from (:class:`IssueSearch`)
METHODS = ("cross_fit", "area_under_margin")
#: what :class:`LabelIssuePruning` does with the flagged rows
ACTIONS = ("prune", "relabel", "down_weight")

#: rows of the review page that get a preview (worst first): the flagged ones and the next lowest scores
PREVIEW_ROWS = 2000


@dataclass(frozen=True)
class IssueSearch:
    """How label issues are searched. ``method="cross_fit"`` (Northcutt et al.): out-of-sample probabilities of
    every training row from ``folds`` copies of the task's network, each trained ``epochs`` epochs (the recipe's
    ``max_epochs`` when null) on the other folds with the task's optimizer, then cleanlab's detection
    (``filter_by``) and ranking (``score``). ``method="area_under_margin"`` (Pleiss et al. 2020,
    :mod:`aipflow.lightning.area_under_margin`): ``aum_runs`` trainings on every row, each with its threshold
    samples, flagging rows whose area under the margin lies below the threshold samples' ``aum_percentile``-th
    percentile; half the cost of a 5-fold cross-fit.

    Args:
        method: ``cross_fit`` or ``area_under_margin``.
        folds: K of the cross-fit, >= 2 (cleanlab's examples use 5); every class needs at least K rows.
        epochs: epochs per fold (per run of the area under the margin); null: the recipe's ``trainer.max_epochs``.
        batch_size: the copies' training batch size.
        seed: seed of the fold assignment (the threshold samples) and of the copies' initialisation and order.
        filter_by: cleanlab's rule (``prune_by_noise_rate``, the paper's default; ``prune_by_class``, ``both``,
            ``confident_learning``, ``predicted_neq_given``).
        score: cleanlab's label-quality score for the ranking (``self_confidence``, ``normalized_margin``,
            ``confidence_weighted_entropy``).
        stream_rows: for more rows than fit in memory: the training rows are read from the data module's dataset
            when a batch needs them (not held in memory, decoded images included), the probabilities go to a
            memory-mapped file, and cleanlab's batched detector reads them this many rows at a time (the
            detection's memory bounded by the batch). Null: rows and probabilities in memory (faster).
        posterior_samples: 0: each fold's mean weights predict its held-out rows; > 0, with a Bayesian optimizer
            (IVON, bSAM; SGLD, pSGLD: the chain's collected samples): the posterior predictive over that many draws
            from the fold's posterior.
        aum_percentile: the area under the margin's threshold, a percentile of the threshold samples' AUM (the
            paper's 99).
        aum_runs: trainings of the area under the margin, each with its own disjoint threshold samples (the
            paper's 2: every row is scored at least once).
    """

    method: Literal["cross_fit", "area_under_margin"] = "cross_fit"
    folds: int = 5
    epochs: int | None = None
    batch_size: int = 64
    seed: int = 0
    filter_by: str = "prune_by_noise_rate"
    score: str = "self_confidence"
    stream_rows: int | None = None
    posterior_samples: int = 0
    aum_percentile: float = 99.0
    aum_runs: int = 2

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"issues.method must be one of {METHODS}, got {self.method!r}")
        if self.folds < 2:
            raise ValueError(f"issues.folds must be >= 2 (a cross-fit), got {self.folds}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"issues.epochs must be >= 1 or null (the recipe's), got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"issues.batch_size must be >= 1, got {self.batch_size}")
        if self.filter_by not in FILTERS:
            raise ValueError(f"issues.filter_by must be one of {FILTERS}, got {self.filter_by!r}")
        if self.score not in SCORES:
            raise ValueError(f"issues.score must be one of {SCORES}, got {self.score!r}")
        if self.stream_rows is not None and self.stream_rows < 1:
            raise ValueError(f"issues.stream_rows must be >= 1 or null, got {self.stream_rows}")
        if self.posterior_samples < 0:
            raise ValueError(f"issues.posterior_samples must be >= 0, got {self.posterior_samples}")
        check_aum_options(self.aum_runs, self.aum_percentile)
        if self.method == "area_under_margin" and (self.posterior_samples or self.stream_rows is not None):
            option = "posterior_samples" if self.posterior_samples else "stream_rows"
            raise ValueError(
                f"issues.{option} applies to method=cross_fit; the area under the margin reads the training "
                "dynamics (set it back to its default)"
            )

    @classmethod
    def from_strings(cls, options: dict[str, str]) -> IssueSearch:
        """From ``--issues.NAME=VALUE`` options; an unknown name or a value of the wrong type is one line."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, text in options.items():
            if name not in fields:
                raise ValueError(f"--issues.{name}: no such option (options: {', '.join(fields)})")
            if name in ("method", "filter_by", "score"):
                values[name] = text
            elif name == "aum_percentile":
                try:
                    values[name] = float(text)
                except ValueError:
                    raise ValueError(f"--issues.{name}: expected a number, got {text!r}") from None
            elif text.lower() in ("null", "none") and name in ("epochs", "stream_rows"):
                values[name] = None
            else:
                try:
                    values[name] = int(text)
                except ValueError:
                    raise ValueError(f"--issues.{name}: expected an integer, got {text!r}") from None
        return cls(**values)

    def epochs_for(self, fit_epochs: int) -> int:
        return self.epochs if self.epochs is not None else fit_epochs

    def cost_in_fits(self, fit_epochs: int) -> float:
        """The search's training as a multiple of one fit on every row: K folds x (K-1)/K of the rows (the cross-fit),
        or one training on every row per run (the area under the margin)."""
        share = self.aum_runs if self.method == "area_under_margin" else self.folds * (self.folds - 1) / self.folds
        return share * self.epochs_for(fit_epochs) / max(1, fit_epochs)


def search_label_issues(
    task: L.LightningModule, datamodule: Any, trainer: L.Trainer | None, search: IssueSearch
) -> tuple[LabelIssues, dict[Any, dict[str, str]], int]:
    """The label issues of ``datamodule``'s training rows by ``search`` with ``task``'s network; the previews of
    the worst rows for the review page; the recipe's epochs (what the cost is measured against)."""
    if not hasattr(datamodule, "train_row_ids"):
        raise ValueError(
            f"data: {type(datamodule).__name__} does not say which labels its training rows are given "
            "(train_row_ids): label issues need a data module whose rows carry the labels training uses, with "
            "their ids (DigitsDataModule, HFDataModule; weak-label modules hold complementary or partial labels, and "
            "their clean labels only for reports)"
        )
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()
    datamodule.setup("fit")
    rows, labels = training_rows(datamodule.train_set, stream=search.stream_rows is not None)
    if len(rows) == 0:
        raise ValueError("data: the training split has no rows")
    if (labels < 0).any():
        raise ValueError("data: the training rows have no labels (label -1): label issues need the given labels")
    num_classes = int(getattr(task, "hparams", {}).get("num_classes") or int(labels.max()) + 1)
    counts = torch.bincount(labels, minlength=num_classes)
    fit_epochs = int(trainer.max_epochs) if trainer is not None and trainer.max_epochs not in (None, -1) else 1
    epochs = search.epochs_for(fit_epochs)
    progress = trainer is not None and trainer.progress_bar_callback is not None
    row_ids = datamodule.train_row_ids
    class_names = getattr(datamodule, "class_names", None)
    if search.method == "area_under_margin":
        empty = [c for c in range(num_classes) if counts[c] == 0]
        if empty:
            raise ValueError(f"data: class {empty[0]} has no training rows (of {num_classes} classes)")
        rank_zero_info(
            f"[aipflow] label issues: area under the margin, {search.aum_runs} runs of {epochs} epochs on "
            f"{len(rows)} training rows"
        )
        result = area_under_margin(
            task,
            rows,
            labels,
            epochs,
            search.batch_size,
            search.seed,
            collate=getattr(datamodule, "collate", None),
            runs=search.aum_runs,
            percentile=search.aum_percentile,
            progress=progress,
        )
        issues = result.label_issues(labels.numpy(), row_ids=row_ids, class_names=class_names)
        return issues, previews(rows, issues), fit_epochs
    thin = [c for c in range(num_classes) if counts[c] < search.folds]
    if thin:
        raise ValueError(
            f"issues.folds={search.folds}: class {thin[0]} has {int(counts[thin[0]])} training rows; every class "
            "needs at least one row per fold (fewer folds, or more rows of that class)"
        )
    rank_zero_info(
        f"[aipflow] label issues: {search.folds}-fold cross-fit of the task's network, {epochs} epochs per fold, "
        f"{len(rows)} training rows"
    )
    out, folder = None, None
    if search.stream_rows is not None:
        folder = tempfile.TemporaryDirectory(prefix="aipflow-issues-")
        out = np.lib.format.open_memmap(
            Path(folder.name) / "probabilities.npy", mode="w+", dtype=np.float32, shape=(len(rows), num_classes)
        )
    try:
        probs = out_of_fold_posteriors(
            task,
            rows,
            labels,
            search.folds,
            epochs,
            search.batch_size,
            search.seed,
            progress=progress,
            collate=getattr(datamodule, "collate", None),
            out=out,
            posterior_samples=search.posterior_samples,
        )
        issues = find_label_issues(
            probs if out is not None else probs.numpy(),
            labels.numpy(),
            row_ids=row_ids,
            class_names=class_names,
            filter_by=search.filter_by,
            score_method=search.score,
            batch_size=search.stream_rows,
            details={"probabilities": _described(search, epochs)},
        )
    finally:
        if folder is not None:
            del out
            folder.cleanup()
    return issues, previews(rows, issues), fit_epochs


def _described(search: IssueSearch, epochs: int) -> str:
    predictive = f", the posterior predictive over {search.posterior_samples} draws" if search.posterior_samples else ""
    return f"{search.folds}-fold cross-fit, {epochs} epochs per fold{predictive}"


def previews(rows: list[dict], issues: LabelIssues) -> dict[Any, dict[str, str]]:
    """What the review page shows of the worst rows: an image row as a thumbnail (its tensor rescaled to [0, 255]:
    the model's input, after the data module's normalisation), a text row as a snippet, a feature row as its
    values."""
    from aipflow.review import image_preview, table_preview, text_preview

    out = {}
    for i in issues.ranked()[:PREVIEW_ROWS].tolist():
        row = rows[i]
        key = issues.row_id(i)
        if "text" in row:
            out[key] = text_preview(row["text"])
        elif isinstance(row.get("x"), torch.Tensor) and row["x"].ndim == 3:
            out[key] = image_preview(_to_image(row["x"]))
        elif isinstance(row.get("x"), torch.Tensor):
            out[key] = table_preview({f"x{j}": float(v) for j, v in enumerate(row["x"].flatten().tolist())})
    return out


def _to_image(x: torch.Tensor):
    from PIL import Image

    x = x.detach().float()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    array = (x * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


class LabelIssuePruning(Callback):
    """Northcutt et al. (2021)'s prune-and-retrain in one run: before training, search the training rows' label
    issues (:class:`IssueSearch`), then leave the flagged rows out (``action="prune"``), give them the
    suggested label (``"relabel"``) or scale their loss by their label score, the out-of-sample probability of
    their given label (``"down_weight"``: a soft pruning; the task needs ``sample_weights: true``), and train.
    What was removed or changed is kept in the checkpoint (a resumed run applies the same rows without searching
    again) and in ``curation``; the issues found are written to ``<log dir>/label_issues/`` (the CSV, the summary
    and the review page)."""

    def __init__(
        self, search: IssueSearch = IssueSearch(), action: Literal["prune", "relabel", "down_weight"] = "prune"
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"LabelIssuePruning.action must be one of {ACTIONS}, got {action!r}")
        self.search = IssueSearch(**search) if isinstance(search, dict) else search
        self.action = action
        self.curation: Curation | None = None
        self.issues: LabelIssues | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "curate"):
            raise ValueError(
                f"LabelIssuePruning needs a data module with curate() and train_row_ids (DigitsDataModule, "
                f"HFDataModule), got {type(datamodule).__name__}"
            )
        if self.action == "down_weight" and not (getattr(pl_module, "hparams", {}) or {}).get("sample_weights"):
            raise ValueError(
                "LabelIssuePruning(action='down_weight') scales the flagged rows' loss: the task must use row "
                "weights (model.sample_weights: true)"
            )
        if self.curation is None:  # not resumed: search now
            from aipflow.label_issues import write_label_issues

            self.issues, shown, _ = search_label_issues(pl_module, datamodule, trainer, self.search)
            flagged = [i for i in self.issues.ranked().tolist() if self.issues.is_issue[i]]
            if self.action == "prune":
                self.curation = Curation(exclude_rows=tuple(self.issues.flagged_rows()))
            elif self.action == "down_weight":
                self.curation = Curation(weights={self.issues.row_id(i): float(self.issues.score[i]) for i in flagged})
            else:
                self.curation = Curation(
                    relabel={self.issues.row_id(i): int(self.issues.predicted[i]) for i in flagged}
                )
            if trainer.is_global_zero:
                folder = Path(trainer.log_dir or trainer.default_root_dir) / "label_issues"
                write_label_issues(self.issues, folder, shown)
            rank_zero_info(f"[aipflow] {self.issues.summary()}")
        datamodule.curate(self.curation)

    def state_dict(self) -> dict[str, Any]:
        return {"action": self.action, "curation": None if self.curation is None else self.curation.as_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        recorded = state_dict.get("curation")
        self.curation = (
            None
            if recorded is None
            else Curation(tuple(recorded["exclude_rows"]), recorded["relabel"], recorded.get("weights", {}))
        )
