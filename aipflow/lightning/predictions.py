"""``aipflow predict`` writes what the model predicts to a file: one row per input, columns from the task's
``predict_step`` (a dict of tensors: a 1-D tensor is one column, an ``(N, K)`` one is K columns ``name_k``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["PredictionWriter", "prediction_table"]

FORMATS = (".csv", ".parquet")


def prediction_table(outputs: list[dict[str, torch.Tensor]]) -> dict[str, list]:
    """The batches' dicts joined into columns, rows ordered by ``index`` when there is one."""
    if not outputs:
        return {}
    joined = {name: torch.cat([batch[name].detach().cpu() for batch in outputs]) for name in outputs[0]}
    if "index" in joined:
        order = torch.argsort(joined["index"], stable=True)
        joined = {name: values[order] for name, values in joined.items()}
    table: dict[str, list] = {}
    for name, values in joined.items():
        if values.ndim == 1:
            table[name] = values.tolist()
        elif values.ndim == 2:
            for k in range(values.shape[1]):
                table[f"{name}_{k}"] = values[:, k].tolist()
        else:
            raise ValueError(f"predict_step output {name!r} has shape {tuple(values.shape)}; give (N,) or (N, K)")
    return table


class PredictionWriter(BasePredictionWriter):
    """Writes every prediction of a ``predict`` run to ``path`` (``.csv`` or ``.parquet``; by default
    ``predictions.csv`` in the run's log folder), gathered from every rank and written once. The path written is
    in ``written``."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        if path is not None and Path(path).suffix not in FORMATS:
            raise ValueError(f"predictions_file must end in one of {FORMATS}, got {path!r}")
        self.path = path
        self.written: Path | None = None
        self.rows = 0

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if batches and not isinstance(batches[0], dict):
            raise TypeError(
                f"{type(pl_module).__name__}.predict_step must return a dict of tensors to be written, got "
                f"{type(batches[0]).__name__}"
            )
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, [{k: v.cpu() for k, v in b.items()} for b in batches])
            batches = [b for rank in everyone for b in rank]
            if "index" in (batches[0] if batches else {}):  # the distributed sampler pads by repeating rows
                batches = _unique_rows(batches)
        if not trainer.is_global_zero:
            return
        table = prediction_table(batches)
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        if names and "predicted" in table:  # the class names beside the ids (ClassLabel or string labels)
            table["predicted_class"] = [names[i] for i in table["predicted"]]
            if "pp_predicted" in table:
                table["pp_predicted_class"] = [names[i] for i in table["pp_predicted"]]
        path = Path(self.path) if self.path else Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        import pandas as pd

        frame = pd.DataFrame(table)
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        self.written, self.rows = path, len(frame)


def _unique_rows(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Each ``index`` once (its first row): the distributed sampler pads the ranks' shards by repeating rows."""
    import numpy as np

    joined = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
    _, first = np.unique(joined["index"].numpy(), return_index=True)
    keep = torch.from_numpy(np.sort(first))
    return [{name: values[keep] for name, values in joined.items()}]
