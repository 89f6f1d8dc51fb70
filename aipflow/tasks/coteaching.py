"""Co-teaching (Han et al., NeurIPS 2018) and Co-teaching+ (Yu et al., ICML 2019).

Two networks (the configured one and a freshly initialised copy) train together. Per mini-batch each network
keeps its ``R(T)`` fraction of smallest-loss samples and its peer is updated on them, with the schedule
``R(T) = 1 - forget_rate * min((T / num_gradual)^exponent, 1)`` over epochs T (paper: forget rate = the noise
rate, num_gradual = 10, exponent 1). Co-teaching+ (``disagreement=True``) first keeps only the samples on which
the two networks' predictions disagree, from epoch ``init_epoch`` on (before it, plain Co-teaching).

Both networks share one optimizer (any: SAM and bSAM included). Evaluation uses the first network. When the
batches carry the clean labels (``clean_y``), the label precision of the kept samples is logged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from aipflow.models import reinitialize
from aipflow.passes import in_extra_pass
from aipflow.tasks.classification import ClassificationTask, _unpack


def _reinitialise(module: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    reinitialize(module)  # a pretrained network keeps its pretrained weights: the peer differs in what a run draws


class CoTeachingTask(ClassificationTask):
    """Co-teaching / Co-teaching+ over the configured network and a re-initialised twin.

    Args:
        forget_rate: the fraction of each batch finally dropped (the paper sets it to the noise rate), [0, 1).
        num_gradual: epochs over which the dropped fraction rises linearly to ``forget_rate`` (10).
        exponent: the schedule's exponent c (1).
        disagreement: Co-teaching+: select among the samples the networks disagree on.
        init_epoch: Co-teaching+ uses plain Co-teaching before this epoch.
        peer_seed: seed of the twin's initialisation.
        **kwargs: the rest of :class:`aipflow.tasks.ClassificationTask`'s options (not ``loss``: the papers'
            cross-entropy).
    """

    accepts_sample_weights = False  # each peer's rows are chosen by small loss

    def __init__(
        self,
        model: nn.Module,
        forget_rate: float = 0.2,
        num_gradual: int = 10,
        exponent: float = 1.0,
        disagreement: bool = False,
        init_epoch: int = 20,
        peer_seed: int = 1,
        **kwargs,
    ) -> None:
        if not 0.0 <= forget_rate < 1.0:
            raise ValueError(f"model.forget_rate must lie in [0, 1), got {forget_rate}")
        if num_gradual < 1:
            raise ValueError(f"model.num_gradual must be >= 1, got {num_gradual}")
        super().__init__(model, loss=None, **kwargs)  # the papers' cross-entropy, on the rows each peer picks
        self.peer = copy.deepcopy(model)
        _reinitialise(self.peer, peer_seed)

    def keep_ratio(self, epoch: int | None = None) -> float:
        epoch = self.current_epoch if epoch is None else epoch
        hp = self.hparams
        return 1.0 - hp.forget_rate * min((epoch / hp.num_gradual) ** hp.exponent, 1.0)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = _unpack(batch)
        logits1, logits2 = self._logits(x), self.peer(x)
        loss1 = F.cross_entropy(logits1.float(), y, reduction="none")
        loss2 = F.cross_entropy(logits2.float(), y, reduction="none")
        candidates = torch.arange(y.numel(), device=y.device)
        if self.hparams.disagreement and self.current_epoch >= self.hparams.init_epoch:
            disagree = torch.nonzero(logits1.argmax(1) != logits2.argmax(1)).squeeze(1)
            if disagree.numel() > 0:
                candidates = disagree
        keep = max(1, round(self.keep_ratio() * candidates.numel()))
        picked_by_1 = candidates[loss1[candidates].argsort()[:keep]]  # net 1's small-loss samples teach net 2
        picked_by_2 = candidates[loss2[candidates].argsort()[:keep]]
        loss = loss1[picked_by_2].mean() + loss2[picked_by_1].mean()
        if not in_extra_pass():
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("train/keep_ratio", self.keep_ratio(), on_step=False, on_epoch=True)
            clean = batch.get("clean_y") if isinstance(batch, dict) else None
            if clean is not None:
                kept = torch.cat([picked_by_1, picked_by_2])
                precision = (y[kept] == clean[kept]).float().mean()
                self.log("train/label_precision", precision, on_step=False, on_epoch=True)
            self._update_metrics("train", logits1, y)
        return loss
