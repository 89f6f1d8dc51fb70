"""The network evaluated at other weights than its own (a virtual step's), through ``torch.func.functional_call``,
with copies of its buffers so that batch-norm statistics move only with the real training step."""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import functional_call


def forward_at(network: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """``network(x)`` with the named ``weights`` in place of its parameters (the others as they are)."""
    state = dict(network.named_parameters())
    state.update(weights)
    state.update({name: buffer.clone() for name, buffer in network.named_buffers()})
    return functional_call(network, state, (x,))
