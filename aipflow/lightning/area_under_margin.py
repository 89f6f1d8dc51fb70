"""The area under the margin (Pleiss, Zhang, Elenberg & Weinberger, "Identifying Mislabeled Data using the Area
Under the Margin Ranking", NeurIPS 2020): which training labels are probably wrong, from the training dynamics of
the task's network on every row, for when K cross-fitted copies cost too much (two runs on all the rows: 2 fits,
against a 5-fold cross-fit's 4).

A row's margin at a step is its assigned label's logit minus the largest other logit, from the forward pass that
trains on it (eq. 1); its AUM is the margin's mean over the epochs (eq. 2). A clean row is learnt from what it shares
with its class and its margin grows early; a wrong label is learnt late, by memorising, and its margin stays low or
negative for most of training. Where "low" ends is measured, not guessed: ``N / (c + 1)`` rows drawn at random are
given an extra class ``c`` that no row has (threshold samples, wrong by construction), and the ``percentile``-th
percentile of their AUM (the paper's 99th) is the threshold; a row whose AUM lies below it is flagged. A threshold
sample's own label is not scored in its run, so the paper trains twice with disjoint threshold sets: every row is
scored at least once.

Where the paper leaves it open: a row scored in several runs is compared by its AUM minus its run's threshold,
averaged over those runs; the suggested label is the class with the highest softmax (over the real classes)
averaged over the same epochs; the ``label_score`` written is ``sigmoid(AUM - threshold)``, in ``(0, 1)``, 0.5 at
the threshold, in the AUM's order (what the review page and the ``down_weight`` action read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch

from aipflow.label_issues import LabelIssues
from aipflow.lightning.cross_fit import _num_classes, _progress, gather_once, rank_and_world, train_copy

__all__ = [
    "AUM_PERCENTILE",
    "AreaUnderMargin",
    "MarginRecord",
    "area_under_margin",
    "check_options",
    "margins",
    "threshold_sets",
]

#: the paper's threshold: the 99th percentile of the threshold samples' AUM
AUM_PERCENTILE = 99.0
#: above this flagged fraction the threshold samples did not separate (with most labels wrong, no detector can
#: tell which class is right): a warning says so
PLAUSIBLE_FLAGGED = 0.5


def margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's margin, its assigned label's logit minus the largest other logit (float32; negative when another
    class is ahead)."""
    logits = logits.float()
    assigned = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return assigned - others.max(1).values


class MarginRecord:
    """The running mean of each row's margin over one run (its AUM), and of its softmax over the ``num_classes``
    real classes (the suggested label), in float64."""

    def __init__(self, rows: int, num_classes: int) -> None:
        self.num_classes = num_classes
        self.margin_sum = torch.zeros(rows, dtype=torch.float64)
        self.prob_sum = torch.zeros(rows, num_classes, dtype=torch.float64)
        self.count = torch.zeros(rows, dtype=torch.float64)

    def update(self, rows: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.margin_sum.index_add_(0, rows, margins(logits, targets).double())
        self.prob_sum.index_add_(0, rows, logits[:, : self.num_classes].float().softmax(1).double())
        self.count.index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))

    def aum(self) -> torch.Tensor:
        """Each row's mean margin (NaN for a row never trained on)."""
        return self.margin_sum / self.count


def check_options(runs: int, percentile: float) -> None:
    """One line for a setting the method cannot use (what ``IssueSearch`` checks before any training)."""
    if runs < 2:
        raise ValueError(f"issues.aum_runs must be >= 2 (disjoint threshold sets score every row), got {runs}")
    if not 0 < percentile <= 100:
        raise ValueError(f"issues.aum_percentile must lie in (0, 100], got {percentile}")


def threshold_sets(rows: int, num_classes: int, runs: int, seed: int) -> list[torch.Tensor]:
    """``runs`` disjoint random sets of ``rows // (num_classes + 1)`` row positions (the paper's count)."""
    size = rows // (num_classes + 1)
    if size < 1:
        raise ValueError(
            f"area under the margin: {rows} rows give no threshold samples (rows // (classes + 1) with "
            f"{num_classes} classes); it needs at least {num_classes + 1} rows"
        )
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    return [order[r * size : (r + 1) * size] for r in range(runs)]


@dataclass(frozen=True)
class AreaUnderMargin:
    """The result of :func:`area_under_margin`, one entry per row: ``relative``, the AUM minus its run's threshold
    (averaged over the runs that scored the row; below 0: flagged); ``probs``, the mean softmax over the real
    classes during training; per run, the threshold and which rows were its threshold samples."""

    relative: np.ndarray
    probs: np.ndarray
    thresholds: tuple[float, ...]
    threshold_rows: tuple[np.ndarray, ...]
    epochs: int
    percentile: float
    details: dict[str, Any] = field(default_factory=dict)

    def label_issues(
        self,
        labels: np.ndarray,
        row_ids: Sequence | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ) -> LabelIssues:
        """As :class:`aipflow.label_issues.LabelIssues`: flagged below the threshold, ranked by the AUM, the
        confident joint counting a flagged row at (given, suggested) and every other row at (given, given)."""
        labels = np.asarray(labels, dtype=np.int64)
        k = self.probs.shape[1]
        predicted = self.probs.argmax(1)
        is_issue = self.relative < 0
        if is_issue.mean() > PLAUSIBLE_FLAGGED:
            import warnings

            warnings.warn(
                f"area under the margin: {is_issue.mean():.0%} of the rows flagged, more than label noise leaves "
                f"plausible ({PLAUSIBLE_FLAGGED:.0%}): the threshold samples were not yet told apart from the rest "
                f"after {self.epochs} epochs (measured: 3 epochs of LoRA on BBC News flag 95 %); train longer "
                "(issues.epochs; the paper trains up to the first learning-rate drop) or use method=cross_fit",
                stacklevel=2,
            )
        joint = np.zeros((k, k))
        np.add.at(joint, (labels, np.where(is_issue, predicted, labels)), 1.0)
        n = len(labels)
        return LabelIssues(
            row_ids=np.arange(n) if row_ids is None else np.asarray(row_ids),
            given=labels,
            predicted=predicted,
            score=0.5 * (1.0 + np.tanh(self.relative / 2)),  # sigmoid, without overflow at extreme margins
            is_issue=is_issue,
            joint=joint,
            num_classes=k,
            class_names=tuple(str(c) for c in class_names) if class_names else None,
            method=f"area under the margin below the threshold samples' {self.percentile:g}th percentile",
            score_method="sigmoid(AUM - threshold)",
            details={
                "thresholds": [round(t, 4) for t in self.thresholds],
                "epochs per run": self.epochs,
                **self.details,
            },
        )


def area_under_margin(
    pl_module: L.LightningModule,
    rows: Sequence[dict],
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    seed: int,
    collate: Callable[[list[dict]], dict] | None = None,
    runs: int = 2,
    percentile: float = AUM_PERCENTILE,
    progress: bool = False,
) -> AreaUnderMargin:
    """The AUM of every row from ``runs`` trainings of a fresh copy of the task's network (:func:`train_copy`,
    seeded per run) on all the rows, each with its own set of threshold samples (:func:`threshold_sets`) labelled
    with an extra class (:func:`aipflow.models.with_extra_class`). Under data-parallel training run ``r`` trains on
    rank ``r % world_size`` and the results are gathered once. The caller's RNG and the task's weights are untouched."""
    from lightning.pytorch.utilities.seed import isolate_rng
    from torch.utils.data import default_collate

    from aipflow.models import with_extra_class

    check_options(runs, percentile)
    n = len(labels)
    k = _num_classes(pl_module, labels)
    collate = collate or default_collate
    sets = threshold_sets(n, k, runs, seed)
    rank, world = rank_and_world()
    # one tensor gathered once: per run the relative AUM and which rows it scored, the threshold; the softmax sums
    relative = torch.zeros(runs, n, dtype=torch.float64)
    scored = torch.zeros(runs, n, dtype=torch.float64)
    thresholds = torch.zeros(runs, dtype=torch.float64)
    prob_sum = torch.zeros(n, k, dtype=torch.float64)
    mine = [r for r in range(runs) if r % world == rank]
    with isolate_rng():
        bar = _progress(len(mine) * epochs, progress)
        for r in mine:
            targets = labels.clone()
            targets[sets[r]] = k
            record = MarginRecord(n, k)

            def on_batch(batch, logits, targets=targets, record=record):
                if logits.shape[1] != k + 1:
                    raise ValueError(
                        f"area under the margin: the widened network gives {logits.shape[1]} logits, expected {k + 1} "
                        "(its classifier is not its last layer)"
                    )
                record.update(batch, logits, targets[batch])

            torch.manual_seed(seed * 1000 + r)
            train_copy(
                pl_module,
                rows,
                targets,
                torch.arange(n),
                epochs,
                batch_size,
                torch.Generator().manual_seed(seed * 1000 + r),
                collate,
                adapt=lambda net: with_extra_class(net, k),
                on_batch=on_batch,
                bar=bar,
            )
            aum = record.aum()
            thresholds[r] = float(np.percentile(aum[sets[r]].numpy(), percentile))
            keep = torch.ones(n, dtype=torch.bool)
            keep[sets[r]] = False
            relative[r, keep] = aum[keep] - thresholds[r]
            scored[r, keep] = 1.0
            prob_sum[keep] += record.prob_sum[keep] / record.count[keep, None]
        bar.close()
    flat = torch.cat([relative.flatten(), scored.flatten(), thresholds, prob_sum.flatten()])
    gather_once(flat)
    relative, scored, thresholds, prob_sum = flat.split([runs * n, runs * n, runs, n * k])
    relative, scored = relative.view(runs, n), scored.view(runs, n)
    times = scored.sum(0)
    return AreaUnderMargin(
        relative=(relative.sum(0) / times).numpy(),
        probs=(prob_sum.view(n, k) / times[:, None]).numpy(),
        thresholds=tuple(float(t) for t in thresholds),
        threshold_rows=tuple(s.numpy() for s in sets),
        epochs=epochs,
        percentile=percentile,
        details={"runs": runs},
    )
