"""Acting on label issues: training rows left out, relabelled or down-weighted by the source's own row id, as
``aipflow find-issues`` wrote them (``label_issues.csv``) or as a list / mapping. Validation and test rows are never
touched (they measure the result)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aipflow.data.rows import RowDataset

__all__ = ["Curation", "NO_CURATION"]


@dataclass(frozen=True)
class Curation:
    """Training rows to leave out (``exclude_rows``), labels to change (``relabel``: row id -> label) and loss
    weights to scale (``weights``: row id -> a factor >= 0, multiplying the row's weight, 1 where the data has
    none; a task uses them with ``sample_weights: true``), by the row ids the data module reports
    (``train_row_ids``: the source's own row numbers); labels as class ids or as the source spells them (class
    names)."""

    exclude_rows: tuple = ()
    relabel: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for row, factor in self.weights.items():
            if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
                raise ValueError(f"curation.weights: row {row!r} has weight {factor!r}, expected a number >= 0")

    @property
    def active(self) -> bool:
        return bool(self.exclude_rows or self.relabel or self.weights)

    @classmethod
    def of(cls, exclude_rows: Sequence | str | None = None, relabel: dict | str | None = None) -> Curation:
        """From a data module's options: ``exclude_rows`` a list of row ids or the path of a ``label_issues.csv``
        (its flagged rows); ``relabel`` a mapping or the path of a ``label_issues.csv`` (its flagged rows get their
        ``predicted_label``)."""
        from aipflow.label_issues import read_label_issues

        if isinstance(exclude_rows, (str, Path)):
            rows = read_label_issues(exclude_rows, "data.exclude_rows")
            exclude_rows = [row["row"] for row in rows if row["is_label_issue"]]
        if isinstance(relabel, (str, Path)):
            rows = read_label_issues(relabel, "data.relabel")
            relabel = {row["row"]: row["predicted_label"] for row in rows if row["is_label_issue"]}
        return cls(tuple(exclude_rows or ()), dict(relabel or {}))

    def as_dict(self) -> dict[str, Any]:
        """Plain types (a checkpoint's record)."""
        return {"exclude_rows": list(self.exclude_rows), "relabel": dict(self.relabel), "weights": dict(self.weights)}

    def apply(
        self,
        dataset: RowDataset,
        row_ids: np.ndarray,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
    ) -> tuple[RowDataset, np.ndarray]:
        """``dataset`` (the training split, row ``i`` having id ``row_ids[i]``) with the excluded rows left out and
        the relabelled rows' ``y`` changed, and the kept rows' ids; a row id the split does not have, or a label
        outside the classes, is one line naming the option and the value."""
        if not self.active:
            return dataset, row_ids
        position = {_key(r): i for i, r in enumerate(row_ids.tolist())}
        options = (("data.exclude_rows", self.exclude_rows), ("data.relabel", list(self.relabel)))
        for option, ids in (*options, ("curation.weights", list(self.weights))):
            unknown = [r for r in ids if _key(r) not in position]
            if unknown:
                raise ValueError(
                    f"{option}: row {unknown[0]!r} is not a training row of this data ({len(unknown)} such ids; "
                    f"the training rows' ids run {row_ids.min()}..{row_ids.max()}): a label_issues.csv from another "
                    "dataset or split?"
                )
        y = dataset.y.clone()
        names = {str(n): c for c, n in enumerate(class_names)} if class_names else {}
        for row, label in self.relabel.items():
            y[position[_key(row)]] = _class_id(label, names, num_classes)
        weight = getattr(dataset, "weight", None)
        if self.weights:
            weight = torch.ones(len(y)) if weight is None else weight.clone()
            for row, factor in self.weights.items():
                weight[position[_key(row)]] *= float(factor)
        dropped = {position[_key(r)] for r in self.exclude_rows}
        kept = np.array([i for i in range(len(row_ids)) if i not in dropped], dtype=np.int64)
        index = torch.from_numpy(kept)
        columns = {name: getattr(dataset, name) for name in dataset.names}
        columns["y"] = y
        if weight is not None:
            columns["weight"] = weight
        columns = {name: value[index] for name, value in columns.items()}
        inputs = None if dataset.inputs is None else _Reindexed(dataset.inputs, kept)
        return RowDataset(columns, inputs), row_ids[kept]

    def describe(self) -> str:
        return (
            f"{len(self.exclude_rows)} training rows left out, {len(self.relabel)} relabelled, "
            f"{len(self.weights)} reweighted"
        )


NO_CURATION = Curation()


class _Reindexed:
    """The inputs of the kept rows: row ``i`` is the original row ``kept[i]`` (a class, so loaders can pickle it)."""

    def __init__(self, inputs: Callable[[int], dict[str, Any]], kept: np.ndarray) -> None:
        self.inputs, self.kept = inputs, kept

    def __call__(self, i: int) -> dict[str, Any]:
        return self.inputs(int(self.kept[i]))


def _key(row: Any) -> str:
    return str(row)


def _class_id(label: Any, names: dict[str, int], num_classes: int | None) -> int:
    if str(label) in names:
        return names[str(label)]
    try:
        value = int(label)
    except (TypeError, ValueError):
        raise ValueError(f"data.relabel: label {label!r} is not a class (classes: {list(names) or 'ids'})") from None
    if num_classes is not None and not 0 <= value < num_classes:
        raise ValueError(f"data.relabel: label {value} is outside [0, {num_classes})")
    return value
