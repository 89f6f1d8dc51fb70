"""Input checks shared by every data module: nothing is trained on garbage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["check_finite_features"]


def check_finite_features(
    features: np.ndarray | torch.Tensor, source: str, columns: Sequence[str] | None = None, show: int = 5
) -> None:
    """Refuse features holding NaN or inf, with one line naming the source, how many values and rows, the first
    rows (0-based) and, when given, the columns they are in."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x.reshape(len(x), -1)) if len(x) else np.zeros((0, 1), dtype=bool)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(1))
    where = ""
    if columns is not None:
        cols = [columns[c] for c in np.flatnonzero(bad.any(0)) if c < len(columns)]
        where = f" in columns {cols[:show]}{' ...' if len(cols) > show else ''}"
    first = ", ".join(str(int(r)) for r in rows[:show]) + (" ..." if len(rows) > show else "")
    raise ValueError(
        f"data: {source} has {int(bad.sum())} non-finite feature values (NaN or inf) in {len(rows)} rows{where} "
        f"(first rows: {first}); clean or impute them before training"
    )
