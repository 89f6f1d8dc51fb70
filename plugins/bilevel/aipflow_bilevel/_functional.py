"""What the bilevel tasks share: the network evaluated at other weights than its own (a virtual step's), through
``torch.func.functional_call`` with copies of its buffers so that batch-norm statistics move only with the real
training step; a batch's inputs and labels; seeded, resumable batches of chosen rows (the clean / validation
batches)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call


def forward_at(network: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """``network(x)`` with the named ``weights`` in place of its parameters (the others as they are)."""
    state = dict(network.named_parameters())
    state.update(weights)
    state.update({name: buffer.clone() for name, buffer in network.named_buffers()})
    return functional_call(network, state, (x,))


def inputs_and_labels(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a dict batch (aipflow's data modules) or a tuple."""
    return (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])


class RowCycle:
    """Batches of ``batch_size`` rows of ``dataset`` drawn from ``rows`` in a seeded order: a new permutation
    whenever fewer than a batch are left (every batch is full), so the clean / validation batches of a run are
    reproducible and resume exactly (``state_dict``)."""

    def __init__(self, dataset: Any, rows: Tensor, batch_size: int, seed: int) -> None:
        self.dataset, self.rows = dataset, rows
        self.batch_size = min(batch_size, len(rows))
        self.generator = torch.Generator().manual_seed(seed)
        self.order: Tensor | None = None
        self.cursor = 0

    def next_batch(self) -> Any:
        from torch.utils.data import default_collate

        if self.order is None or self.cursor + self.batch_size > len(self.rows):
            self.order = self.rows[torch.randperm(len(self.rows), generator=self.generator)]
            self.cursor = 0
        chosen = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return default_collate([self.dataset[int(i)] for i in chosen])

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "generator": self.generator.get_state(), "order": self.order, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = state["rows"]
        self.generator.set_state(state["generator"])
        self.order, self.cursor = state["order"], int(state["cursor"])
