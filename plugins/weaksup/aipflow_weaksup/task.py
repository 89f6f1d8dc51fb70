"""A binary classifier trained with a weak-supervision risk estimator, selected on weak labels only.

Logs ``train/objective`` (what is minimised) and ``train/risk`` (the estimator's reported value; for PU also
``train/negative_part``, the estimate of the negative-class risk that nnPU keeps non-negative);
``val/weak_risk`` and ``val/weak_risk_zero_one``: the unbiased form of the training estimator (uPU for PU data,
the setting's own estimator without correction otherwise) on the validation split's weak labels, with the
training surrogate and with the zero-one loss, usable by ``ModelCheckpoint`` / ``EarlyStopping`` without any
clean label; and ``val/error`` / ``test/error`` on the clean labels for reporting.
"""

from __future__ import annotations

import torch
from torch import nn

from aipflow.tasks import Task
from aipflow_weaksup._distributed import whole_split
from aipflow_weaksup.prior import METHODS, PriorEstimate, estimate_prior
from aipflow_weaksup.risks.binary import BinaryWeakRisk
from aipflow_weaksup.risks.pu import PNRisk, PURisk, pu_risk


class WeakBinaryTask(Task):
    """Args:
    model: the network, ``(N, d) -> (N, 1)`` margins.
    risk: ``PURisk`` or ``PNRisk`` (with ``PUDigitsDataModule``), or ``BinaryWeakRisk`` (with
        ``BinaryWeakDigitsDataModule``); a ``prior`` (and UU's ``theta`` / ``theta2``) left unset is taken from the
        data module (known prior) or, for PU with ``prior_estimator``, estimated before training.
    prior_estimator: ``None`` or a class-prior estimator (``"bbe"``, ``"km2"``, ``"km1"``, ``"tice"``, ``"e1"``,
        ``"e2"``, ``"e3"``; see ``aipflow_weaksup.prior``): the prior is estimated from the training split's weak
        labels before training, printed and logged as ``data/prior_estimate``; the weak validation risk then uses
        the estimate too (no true prior anywhere). ``bbe`` scores the rows with freshly initialised copies of
        ``model`` trained as labelled-vs-unlabelled classifiers (5-fold cross-fitting). ``risk.prior: auto``
        alone means ``bbe``.
    prior_bootstrap: bootstrap resamples for the estimate's 95 % interval (0: none).
    **kwargs: :class:`aipflow.tasks.Task`'s ``optimizer`` (the core's default, AdamW lr 1e-3 weight decay 1e-2,
        when omitted; the recipes name theirs), ``lr_scheduler`` and ``lr_scheduler_interval``.
    """

    def __init__(
        self,
        model: nn.Module,
        risk: nn.Module,
        prior_estimator: str | None = None,
        prior_bootstrap: int = 0,
        **kwargs,
    ) -> None:
        if not isinstance(risk, (PURisk, PNRisk, BinaryWeakRisk)):
            raise TypeError(f"model.risk must be PURisk, PNRisk or BinaryWeakRisk, got {type(risk).__name__}")
        if prior_estimator is not None and prior_estimator not in METHODS:
            raise ValueError(f"model.prior_estimator must be one of {METHODS} or null, got {prior_estimator!r}")
        super().__init__(model, **kwargs)
        self.risk = risk
        self.prior_estimator, self.prior_bootstrap = prior_estimator, prior_bootstrap
        self.prior_estimate: PriorEstimate | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.squeeze(-1) if out.ndim == 2 and out.shape[1] == 1 else out

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.trainer.datamodule
        prior = getattr(dm, "prior", None)
        if isinstance(self.risk, BinaryWeakRisk):
            if not hasattr(dm, "realised"):
                raise TypeError("model.risk BinaryWeakRisk needs a binary weak-label data module (group codes)")
            if self.risk.prior is None:
                self.risk.prior = prior
            if self.risk.theta is None and self.risk.theta2 is None:
                self.risk.theta, self.risk.theta2 = dm.realised.get("theta"), dm.realised.get("theta2")
            return
        if isinstance(self.risk, PNRisk) and self.risk.prior is None and dm is not None:
            self.risk.prior = float((dm.train_set.y == 1).float().mean())  # supervised: the training prior
        if isinstance(self.risk, PURisk) and self.risk.auto_prior and self.prior_estimator is None:
            self.prior_estimator = "bbe"  # prior: auto on the risk, no estimator named: the default one
        if isinstance(self.risk, PURisk) and self.risk.prior is None and self.prior_estimator and stage == "fit":
            train = dm.train_set
            self.prior_estimate = estimate_prior(
                train.x.numpy(),
                train.s.numpy(),
                self.prior_estimator,
                n_bootstrap=self.prior_bootstrap,
                seed=torch.initial_seed() % 2**32,
                classifier=self.model if self.prior_estimator == "bbe" else None,
                progress=self.trainer.progress_bar_callback is not None,
            )
            # every rank trains with rank 0's estimate (a scorer trained on a GPU need not agree to the last bit)
            self.prior_estimate.prior = self.trainer.strategy.broadcast(self.prior_estimate.prior, src=0)
            self.risk.prior = self.prior_estimate.prior
            interval = self.prior_estimate.interval
            extra = f", 95 % interval [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
            print(f"[weaksup] estimated class prior ({self.prior_estimator}): {self.risk.prior:.4f}{extra}")
            return
        if isinstance(self.risk, PURisk) and self.risk.prior is None:
            if prior is None:
                raise ValueError("model.risk.prior is not set and the data module records no class prior")
            self.risk.prior = prior
        estimated = self.prior_estimate is not None  # an estimate is what it is: only a given prior is checked
        if (
            prior is not None
            and isinstance(self.risk, PURisk)
            and not estimated
            and abs(prior - self.risk.prior) > 0.05
        ):
            raise ValueError(
                f"model.risk.prior is {self.risk.prior} but the unlabelled data has class prior {prior:.3f}; "
                "a prior inconsistent with the data biases every PU estimator"
            )

    def on_train_epoch_start(self) -> None:
        if self.prior_estimate is not None:
            self.log("data/prior_estimate", self.prior_estimate.prior)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        scores = self(batch["x"])
        if isinstance(self.risk, PNRisk):
            objective = self.risk(scores, batch["y"])  # the fully supervised baseline uses the true labels
            self.log("train/risk", objective, on_step=False, on_epoch=True)
        elif isinstance(self.risk, BinaryWeakRisk):
            objective = self.risk(scores, batch["group"], batch["confidence"])
            self.log("train/risk", self.risk.last.risk, on_step=False, on_epoch=True)
        else:
            objective = self.risk(scores, batch["s"])
            self.log("train/risk", self.risk.last.risk, on_step=False, on_epoch=True)
            # R_U^- - pi R_P^-, the estimate of (1 - pi) R_N^-: uPU drives it below zero when it overfits
            self.log("train/negative_part", self.risk.last.negative, on_step=False, on_epoch=True)
        self.log("train/objective", objective, on_step=False, on_epoch=True, prog_bar=True)
        return objective

    def validation_step(self, batch, batch_idx: int) -> None:
        batch = whole_split(self, batch, scores=self(batch["x"]))
        scores = batch["scores"]
        dm = self.trainer.datamodule
        if isinstance(self.risk, BinaryWeakRisk):  # the validation split's own realised quantities
            realised = {k: v for k, v in getattr(dm, "val_realised", {}).items() if k in ("prior", "theta", "theta2")}
            group, confidence = batch["group"], batch["confidence"]
            weak = self.risk.evaluate(scores, group, confidence, correction="none", **realised)
            weak01 = self.risk.evaluate(scores, group, confidence, correction="none", loss="zero_one", **realised)
        else:
            # the validation split's recorded prior when it is known; an estimate otherwise (setup set risk.prior)
            known = self.prior_estimate is None and getattr(dm, "val_prior", None) is not None
            prior = dm.val_prior if known else self.risk.prior
            loss = getattr(self.risk, "loss", "sigmoid")
            weak = pu_risk(scores, batch["s"], prior, loss, "upu")
            weak01 = pu_risk(scores, batch["s"], prior, "zero_one", "upu")
        self.log("val/weak_risk", weak.risk, prog_bar=True)
        self.log("val/weak_risk_zero_one", weak01.risk)
        self.log("val/error", _error(scores, batch["y"]), prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        batch = whole_split(self, batch, scores=self(batch["x"]))
        self.log("test/error", _error(batch["scores"], batch["y"]), batch_size=len(batch["y"]))

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``aipflow predict``'s columns: ``index``, the true ``label`` (+1 / -1) when the batch has it, the
        classifier's ``score``, ``prob_positive`` = sigmoid(score) and the ``predicted`` label (+1 / -1)."""
        scores = self(batch["x"]).float()
        out = {"index": batch["index"]} if "index" in batch else {}
        if "y" in batch:
            out["label"] = batch["y"]
        return out | {"score": scores, "prob_positive": scores.sigmoid(), "predicted": (scores > 0).long() * 2 - 1}


def _error(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((scores > 0).long() * 2 - 1 != y).float().mean()
