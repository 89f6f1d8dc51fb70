"""Which training labels are probably wrong: Confident Learning (Northcutt, Jiang & Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021) on out-of-sample class probabilities, with cleanlab (Apache-2.0,
the paper's reference implementation) doing the detection and the ranking.

- Detection: ``cleanlab.filter.find_label_issues`` (default ``filter_by="prune_by_noise_rate"``: for each given
  class, the off-diagonal counts of the calibrated confident joint decide how many rows are issues, and the rows
  with the largest margin ``p_other - p_given`` are taken); for more rows than fit in memory, cleanlab's batched
  ``LabelInspector`` over memory-mapped probabilities (two passes: per-class thresholds, then scores and counts).
- Ranking: ``cleanlab.rank.get_label_quality_scores`` (``self_confidence``: the probability of the given label;
  ``normalized_margin``, ``confidence_weighted_entropy``), a score in [0, 1], low meaning likely wrong.
- The confident joint and the noise transition matrix of the summary: :func:`aipflow.losses.confident_joint`
  (written from the paper; the loss corrections' transition-matrix estimate reads the same function; tested against
  cleanlab's ``estimate_joint``).

Where the probabilities come from is aipflow's part: K-fold cross-fitting of the task's own network
(:func:`aipflow.lightning.out_of_fold_posteriors`), a Bayesian run's posterior predictive, or the training
dynamics of the task's network (:mod:`aipflow.lightning.area_under_margin`); ``aipflow find-issues`` runs them
from a recipe.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ISSUE_COLUMNS",
    "LabelIssues",
    "check_probabilities",
    "confident_joint",
    "find_label_issues",
    "read_label_issues",
    "write_label_issues",
]

#: the columns of ``label_issues.csv``, named as cleanlab's Datalab names them (``row``: the source's own row id)
ISSUE_COLUMNS = ("row", "given_label", "predicted_label", "label_score", "is_label_issue")
#: how far a row's probabilities may sum from 1 (float32 softmax outputs sum to 1 within ~1e-6)
SUM_TOLERANCE = 1e-3
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def check_probabilities(
    probs: Any, labels: Any, num_classes: int | None = None, field: str = "probabilities", batch_size: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` (N, K) and ``labels`` (N,) as arrays, or one line naming what is wrong: the shape, the class count
    (``num_classes``), a row that is not finite or does not sum to 1, a label outside ``[0, K)``, a class with no
    rows (Confident Learning needs each class's rows for its threshold). Checked in batches of ``batch_size`` rows,
    so a memory-mapped array is never read whole."""
    if not isinstance(probs, np.ndarray):
        probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"{field}: expected a (rows, classes) array, got shape {tuple(probs.shape)}")
    n, k = probs.shape
    if n == 0:
        raise ValueError(f"{field}: no rows (an empty training split?)")
    if num_classes is not None and k != num_classes:
        raise ValueError(f"{field}: {k} columns (classes), expected {num_classes} (the data's num_classes)")
    if k < 2:
        raise ValueError(f"{field}: {k} class, expected at least 2")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected {n} labels (one per row of {field}), got shape {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class ids, got dtype {labels.dtype}")
    outside = np.flatnonzero((labels < 0) | (labels >= k))
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"labels: row {i} has label {int(labels[i])}, outside [0, {k})")
    for start in range(0, n, batch_size):
        block = np.asarray(probs[start : start + batch_size], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(block).all(1))
        if bad.size:
            i = start + int(bad[0])
            raise ValueError(f"{field}: row {i} is not finite ({np.asarray(probs[i]).tolist()[:8]})")
        negative = np.flatnonzero((block < 0).any(1))
        if negative.size:
            raise ValueError(f"{field}: row {start + int(negative[0])} has a negative probability")
        sums = block.sum(1)
        off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
        if off.size:
            i = int(off[0])
            raise ValueError(
                f"{field}: row {start + i} sums to {sums[i]:.6g}, expected 1 (class probabilities, not logits or "
                "scores; within 1e-3)"
            )
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"labels: class {int(empty[0])} has no rows (of {k} classes); Confident Learning needs rows of every "
            "class for its threshold (drop the class, or set num_classes to the classes present)"
        )
    return probs, labels


def confident_joint(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The calibrated confident joint as counts ``C[given, true]`` summing to N (aipflow's one implementation,
    :func:`aipflow.losses.confident_joint`, times N). ``P(given = j | true = i) = C[j, i] / sum_j C[j, i]``."""
    import torch

    from aipflow.losses import confident_joint as joint_fractions

    fractions = joint_fractions(torch.as_tensor(np.asarray(probs)), torch.as_tensor(np.asarray(labels)))
    return fractions.numpy() * len(labels)


def transition_from_joint(joint: np.ndarray) -> np.ndarray:
    """``T[true, given] = P(given | true)`` (aipflow's convention: rows are the clean class) from a confident joint
    ``C[given, true]``; a true class no row is confidently assigned to gets the identity row (no evidence)."""
    joint = np.asarray(joint, dtype=np.float64)
    column = joint.sum(0)
    t = np.eye(len(joint))
    seen = column > 0
    t[seen] = (joint[:, seen] / column[seen]).T
    return t


@dataclass(frozen=True)
class LabelIssues:
    """The result of :func:`find_label_issues`, one entry per training row (in the order given).

    ``given`` / ``predicted`` are class ids (``class_names`` spells them); ``score`` is the label quality in
    [0, 1], low meaning likely wrong; ``joint`` the calibrated confident joint ``C[given, true]`` (``None`` on the
    batched path, which counts issues per class without it)."""

    row_ids: np.ndarray
    given: np.ndarray
    predicted: np.ndarray
    score: np.ndarray
    is_issue: np.ndarray
    joint: np.ndarray | None
    num_classes: int
    class_names: tuple[str, ...] | None = None
    method: str = "prune_by_noise_rate"
    score_method: str = "self_confidence"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_issues(self) -> int:
        return int(self.is_issue.sum())

    @property
    def transition_matrix(self) -> np.ndarray | None:
        """``T[true, given] = P(given | true)`` estimated from the confident joint."""
        return None if self.joint is None else transition_from_joint(self.joint)

    @property
    def noise_rate(self) -> float:
        """The estimated fraction of wrong labels: the confident joint's off-diagonal mass (the flagged fraction on
        the batched path)."""
        if self.joint is None:
            return self.num_issues / max(1, len(self.given))
        return float(1.0 - np.trace(self.joint) / self.joint.sum())

    def row_id(self, position: int) -> Any:
        """The source's id of the row at ``position``, as a plain Python value (CSV, JSON, checkpoints)."""
        return _plain(self.row_ids[position])

    def flagged_rows(self) -> list:
        """The ids of the flagged rows, worst first."""
        return [self.row_id(i) for i in self.ranked() if self.is_issue[i]]

    def label_name(self, class_id: int) -> str | int:
        return self.class_names[class_id] if self.class_names else int(class_id)

    def ranked(self) -> np.ndarray:
        """Row positions worst first: by score, ties by position (a stable order)."""
        return np.argsort(self.score, kind="stable")

    def flagged_per_class(self) -> dict[str | int, int]:
        """Flagged rows per given label."""
        counts = np.bincount(self.given[self.is_issue], minlength=self.num_classes)
        return {self.label_name(c): int(counts[c]) for c in range(self.num_classes)}

    def records(self) -> list[dict[str, Any]]:
        """The rows worst first, with :data:`ISSUE_COLUMNS` (labels spelled as the source spells them)."""
        return [
            {
                "row": self.row_id(i),
                "given_label": self.label_name(int(self.given[i])),
                "predicted_label": self.label_name(int(self.predicted[i])),
                "label_score": float(self.score[i]),
                "is_label_issue": bool(self.is_issue[i]),
            }
            for i in self.ranked()
        ]

    def summary(self) -> str:
        n = len(self.given)
        lines = [
            f"label issues: {self.num_issues} of {n} rows flagged ({self.num_issues / n:.1%}); "
            f"estimated noise rate {self.noise_rate:.3f}",
            f"detection: {self.method}{' (cleanlab)' if self.method in FILTERS else ''}, ranked by {self.score_method}"
            + "".join(f"; {k}: {v}" for k, v in self.details.items()),
            "flagged per given label: " + ", ".join(f"{k}: {v}" for k, v in self.flagged_per_class().items()),
        ]
        t = self.transition_matrix
        if t is not None:
            names = [str(self.label_name(c)) for c in range(self.num_classes)]
            width = max(6, *(len(s) for s in names))
            lines.append("estimated transition matrix T[true, given] = P(given | true):")
            lines.append(" " * (width + 1) + " ".join(s[:width].rjust(width) for s in names))
            for c, row in enumerate(t):
                lines.append(names[c][:width].rjust(width) + " " + " ".join(f"{v:{width}.3f}" for v in row))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Plain types (the summary file, a checkpoint's record)."""
        t = self.transition_matrix
        return {
            "rows": len(self.given),
            "flagged": self.num_issues,
            "noise_rate": self.noise_rate,
            "method": self.method,
            "score_method": self.score_method,
            "flagged_per_class": {str(k): v for k, v in self.flagged_per_class().items()},
            "confident_joint": None if self.joint is None else self.joint.tolist(),
            "transition_matrix": None if t is None else t.tolist(),
            "class_names": list(self.class_names) if self.class_names else None,
            **{k: _plain(v) for k, v in self.details.items()},
        }


def find_label_issues(
    probs: Any,
    labels: Any,
    row_ids: Sequence | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    filter_by: str = "prune_by_noise_rate",
    score_method: str = "self_confidence",
    batch_size: int | None = None,
    details: dict[str, Any] | None = None,
) -> LabelIssues:
    """The label issues of ``labels`` given out-of-sample ``probs`` (N, K), by cleanlab.

    ``row_ids``: the source's own id of each row (positions when ``None``); ``class_names``: how the source spells
    the classes; ``filter_by``: cleanlab's detection rule (:data:`FILTERS`); ``score_method``: its ranking
    (:data:`SCORES`). ``batch_size``: read ``probs`` (a memory-mapped array, say) in batches of that many rows with
    cleanlab's batched detector (``self_confidence`` scores, issues counted per class as ``prune_by_noise_rate``
    does): memory bounded by the batch, not the rows."""
    if filter_by not in FILTERS:
        raise ValueError(f"filter_by must be one of {FILTERS}, got {filter_by!r}")
    if score_method not in SCORES:
        raise ValueError(f"score_method must be one of {SCORES}, got {score_method!r}")
    probs, labels = check_probabilities(probs, labels, len(class_names) if class_names else None)
    n, k = probs.shape
    labels = labels.astype(np.int64, copy=False)
    row_ids = np.arange(n) if row_ids is None else np.asarray(row_ids)
    if len(row_ids) != n:
        raise ValueError(f"row_ids: {len(row_ids)} ids for {n} rows")
    names = tuple(str(c) for c in class_names) if class_names else None
    if batch_size is not None:
        return _batched(probs, labels, row_ids, names, batch_size, details or {})
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    dense = np.asarray(probs, dtype=np.float64)
    joint = confident_joint(dense, labels)
    is_issue = cleanlab_find(labels, dense, filter_by=filter_by)
    score = get_label_quality_scores(labels, dense, method=score_method)
    return LabelIssues(
        row_ids=row_ids,
        given=labels,
        predicted=dense.argmax(1),
        score=np.asarray(score, dtype=np.float64),
        is_issue=np.asarray(is_issue, dtype=bool),
        joint=joint,
        num_classes=k,
        class_names=names,
        method=filter_by,
        score_method=score_method,
        details=dict(details or {}),
    )


def _batched(probs, labels, row_ids, names, batch_size: int, details: dict) -> LabelIssues:
    from cleanlab.experimental.label_issues_batched import LabelInspector

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, k = probs.shape
    inspector = LabelInspector(num_class=k, store_results=False, verbose=False, n_jobs=1)
    for start in range(0, n, batch_size):
        inspector.update_confident_thresholds(labels[start : start + batch_size], probs[start : start + batch_size])
    score = np.empty(n)
    predicted = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        block = np.asarray(probs[start : start + batch_size])
        score[start : start + len(block)] = inspector.score_label_quality(labels[start : start + len(block)], block)
        predicted[start : start + len(block)] = block.argmax(1)
    flagged = int(inspector.get_num_issues())
    is_issue = np.zeros(n, dtype=bool)
    is_issue[np.argsort(score, kind="stable")[:flagged]] = True
    return LabelIssues(
        row_ids=row_ids,
        given=labels,
        predicted=predicted,
        score=score,
        is_issue=is_issue,
        joint=None,
        num_classes=k,
        class_names=names,
        method="batched (cleanlab LabelInspector)",
        score_method="self_confidence",
        details={**details, "batch_size": batch_size},
    )


def write_label_issues(
    issues: LabelIssues,
    folder: str | Path,
    previews: dict[Any, dict[str, str]] | None = None,
    title: str = "Label issues",
) -> dict[str, Path]:
    """Write ``label_issues.csv`` (every row, worst first, :data:`ISSUE_COLUMNS`), ``label_issues_summary.txt`` and
    ``.json`` (:meth:`LabelIssues.summary`, :meth:`LabelIssues.as_dict`) and ``label_issues.html`` (the review page,
    with ``previews`` by row id) into ``folder``. Each file is written under a temporary name and renamed: a
    failure or a kill leaves no half-written file."""
    from aipflow.review import review_page

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = issues.records()
    summary = issues.summary()
    written = {}

    def atomic(name: str, write) -> None:
        path = folder / name
        temporary = folder / f".{name}.partial"
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            write(handle)
        os.replace(temporary, path)
        written[name] = path

    def table(handle) -> None:
        writer = csv.DictWriter(handle, fieldnames=ISSUE_COLUMNS)
        writer.writeheader()
        writer.writerows(records)

    atomic("label_issues.csv", table)
    atomic("label_issues_summary.txt", lambda h: h.write(summary + "\n"))
    atomic("label_issues_summary.json", lambda h: json.dump(issues.as_dict(), h, indent=1))
    atomic("label_issues.html", lambda h: h.write(review_page(records, previews, title, summary)))
    return written


def read_label_issues(path: str | Path, field: str = "data.label_issues") -> list[dict[str, Any]]:
    """The rows of a ``label_issues.csv`` (as :func:`write_label_issues` writes it), or one line naming what is
    missing: the file, or one of :data:`ISSUE_COLUMNS`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{field}: {str(path)!r} is not a file (a label_issues.csv that aipflow find-issues wrote)")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ISSUE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{field}: {str(path)!r} lacks the column(s) {missing} (expected {list(ISSUE_COLUMNS)}: "
                "a label_issues.csv that aipflow find-issues wrote)"
            )
        return [
            {**row, "label_score": float(row["label_score"]), "is_label_issue": row["is_label_issue"] == "True"}
            for row in reader
        ]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
