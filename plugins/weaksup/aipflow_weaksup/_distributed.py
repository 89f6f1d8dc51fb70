"""What the weak-label tasks need under DDP: risks of the whole evaluation split, and per-sample state that
every rank keeps the same."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch


def whole_split(
    module: L.LightningModule, batch: dict[str, torch.Tensor], **outputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """An evaluation ``batch`` without its inputs ``x``, with the model's ``outputs`` added as fields.

    Under DDP each rank evaluates a shard of the split (Lightning's distributed sampler pads the shards to one
    size by repeating rows): every rank's rows are gathered and each ``index`` kept once, so that a weak risk (not
    a mean of per-row terms) is the whole split's and every rank logs the same value."""
    rows = {name: value for name, value in batch.items() if name != "x"} | outputs
    if module.trainer.world_size == 1:
        return rows
    gathered = {name: module.all_gather(value).flatten(0, 1) for name, value in rows.items()}
    _, first = np.unique(gathered["index"].cpu().numpy(), return_index=True)
    keep = torch.as_tensor(first, device=gathered["index"].device)
    return {name: value[keep] for name, value in gathered.items()}


def share_rows(module: L.LightningModule, index: torch.Tensor, buffers: list[torch.Tensor]) -> None:
    """Per-sample buffers (rows ``index`` just updated on this rank) made equal on every rank: each rank writes
    the rows every other rank updated (DDP would otherwise keep only rank 0's rows, broadcasting its buffers)."""
    if module.trainer.world_size == 1:
        return
    every_index = module.all_gather(index).flatten(0, 1)
    for buffer in buffers:
        buffer[every_index] = module.all_gather(buffer[index]).flatten(0, 1)
