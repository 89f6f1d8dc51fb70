"""The compression configs: one frozen dataclass per method (its options, the paper's defaults) and the one layer
filter, with no method code: what :func:`aipflow_compress.compress_` applies, what the command and the callbacks
build, and what Python users write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

__all__ = [
    "CPConfig",
    "ChannelPruningConfig",
    "CompressionConfig",
    "CompressionReport",
    "HeadPruningConfig",
    "Int8Config",
    "LayerFilter",
    "LowRankConfig",
    "MagnitudePruningConfig",
    "TensorTrainConfig",
    "TuckerConfig",
]


@dataclass(frozen=True)
class LayerFilter:
    """Which layers a method acts on, by their dotted names: those where the regular expression ``include``
    matches (every layer of the method's kinds when null) and ``exclude`` does not."""

    include: str | None = None
    exclude: str | None = None


@dataclass(frozen=True)
class MagnitudePruningConfig:
    """Unstructured magnitude pruning of Linear / Conv layers (Han et al., NeurIPS 2015): the smallest ``|w|`` to
    ``sparsity``, over all layers together (``scope="global"``) or each layer to it (``"layer"``); ``permanent``
    folds the masks into the weights (the export step), else they stay parametrizations."""

    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    permanent: bool = True
    layers: LayerFilter = field(default_factory=LayerFilter)


@dataclass(frozen=True)
class ChannelPruningConfig:
    """Structured channel pruning through torch-pruning (DepGraph): ``ratio`` of the channels removed, ranked by
    their filters' ``l1`` norm (Li et al., ICLR 2017), ``l2`` or the batch-norm scale (``bn_scale``, Network
    Slimming); per layer or across layers (``scope="global"``); ``layers.exclude`` names layers kept whole."""

    ratio: float = 0.5
    importance: Literal["l1", "l2", "bn_scale"] = "l1"
    scope: Literal["global", "layer"] = "layer"
    round_to: int | None = None
    layers: LayerFilter = field(default_factory=LayerFilter)


@dataclass(frozen=True)
class HeadPruningConfig:
    """Whole attention heads removed (Michel et al., NeurIPS 2019): ``ratio`` of them, ranked by ``l1`` / ``l2`` of
    their weights or ``sensitivity`` (needs calibration batches), per layer or across layers."""

    ratio: float = 0.5
    importance: Literal["l1", "l2", "sensitivity"] = "l1"
    scope: Literal["global", "layer"] = "layer"


@dataclass(frozen=True)
class Int8Config:
    """int8 post-training quantization through torchao: ``int8_dynamic`` (int8 weights and activations),
    ``int8_weight_only``, or ``int8_static`` (PT2E, calibrated on data; a new graph module, not in place)."""

    scheme: Literal["int8_dynamic", "int8_weight_only", "int8_static"] = "int8_dynamic"
    layers: LayerFilter = field(default_factory=LayerFilter)


@dataclass(frozen=True)
class LowRankConfig:
    """Truncated SVD of Linear layers into ``in -> r -> out``; the rank from one of ``rank``, ``energy`` (share of
    squared singular values kept) or ``ratio`` (a weight budget)."""

    rank: int | None = None
    energy: float | None = None
    ratio: float | None = None
    layers: LayerFilter = field(default_factory=LayerFilter)


@dataclass(frozen=True)
class TuckerConfig:
    """Tucker-2 convolutions (Kim et al., ICLR 2016), HOSVD refined by ``iterations`` of HOOI; ranks as
    :class:`LowRankConfig`'s."""

    rank: int | None = None
    energy: float | None = None
    ratio: float | None = None
    iterations: int = 2
    layers: LayerFilter = field(default_factory=LayerFilter)


@dataclass(frozen=True)
class CPConfig:
    """CP convolutions (Lebedev et al., ICLR 2015) from CP-ALS; ``rank`` or ``ratio``; ALS work above
    ``max_gflop`` is refused."""

    rank: int | None = None
    ratio: float | None = None
    iterations: int = 100
    max_gflop: float | None = 50.0
    layers: LayerFilter = field(default_factory=LayerFilter)


@dataclass(frozen=True)
class TensorTrainConfig:
    """Tensor-train Linear layers (Novikov et al., NeurIPS 2015) from TT-SVD: relative error ``epsilon``, TT ranks
    at most ``max_rank``, ``cores`` cores."""

    epsilon: float = 0.1
    max_rank: int | None = None
    cores: int = 3
    layers: LayerFilter = field(default_factory=LayerFilter)


CompressionConfig = (
    MagnitudePruningConfig
    | ChannelPruningConfig
    | HeadPruningConfig
    | Int8Config
    | LowRankConfig
    | TuckerConfig
    | CPConfig
    | TensorTrainConfig
)


@dataclass(frozen=True)
class CompressionReport:
    """What one ``compress_`` call did: ``method`` (the config's kind), ``settings`` (the options in words, as the
    command's report writes them), ``layers`` (per layer what changed: a sparsity, ranks and error, a ``replaced``
    flag) and ``model``, the compressed network: the one given, changed in place, except for static int8."""

    method: str
    settings: str
    layers: dict[str, Any]
    model: nn.Module
