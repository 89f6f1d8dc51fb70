"""The one row dataset every data module's splits are: each row a dict of its inputs, its named columns and its
``index``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["IndexedDataset", "RowDataset"]


class RowDataset(Dataset):
    """Rows as dicts: the inputs of row ``i`` when ``inputs`` is given (a decoded image, a text: ``inputs(i)`` is a
    dict), then each column's entry (``x``, ``y``, ``clean_y``, ``weight``, weak labels, ...), then the row's
    ``index`` (per-sample state such as ELR's or PRODEN's needs it). Columns are attributes (``dataset.y``); a
    column given as ``None`` is kept as ``None`` and left out of the rows."""

    def __init__(
        self, columns: dict[str, torch.Tensor | None], inputs: Callable[[int], dict[str, Any]] | None = None
    ) -> None:
        self.inputs = inputs
        self.names = tuple(name for name, value in columns.items() if value is not None)
        if not self.names:
            raise ValueError("RowDataset needs at least one column")
        for name, value in columns.items():
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(getattr(self, self.names[0]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = dict(self.inputs(i)) if self.inputs is not None else {}
        row.update({name: getattr(self, name)[i] for name in self.names})
        row["index"] = torch.tensor(i)
        return row


class IndexedDataset(RowDataset):
    """Tensors as rows ``{"x", "y", "clean_y", "index"}`` (``clean_y`` the labels themselves when not given)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, clean_y: torch.Tensor | None = None) -> None:
        super().__init__({"x": x, "y": y, "clean_y": y if clean_y is None else clean_y})
