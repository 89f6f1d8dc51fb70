"""Multi-class weak labels on digits (10 classes): complementary labels and partial labels, with their task.

Conventions (``weak``):

- ``"complementary"``: each training sample gets ``num_complementary`` classes it does not belong to, drawn
  uniformly among the other K - 1 (``complementary: uniform``; Ishida et al. 2017 for one label; Feng et al. 2020
  for several). Batches carry them as class indices ``(N,)`` for one label, a multi-hot ``(N, K)`` mask
  otherwise. ``complementary: biased`` (one label; Yu et al. 2018) draws it from a transition matrix
  ``Q[y, c] = p(c | y)`` that puts all of row y on ``biased_support`` other classes, with weights from a flat
  Dirichlet (seeded by ``label_seed``); Q is recorded as ``transition`` (what the forward loss needs);
- ``"partial"``: each wrong class joins the candidate set independently with probability ``partial_q``
  (``partial: binomial``, the "q" protocol of Feng et al. 2020 / Lv et al. 2020), or only the class paired with
  the true one, ``(y + 1) mod K``, joins with probability ``partial_q`` (``partial: pair``, the pair-flipping
  protocol of Lv et al. 2020); the true class is always in the set. Batches carry the ``(N, K)`` mask.

Weak labels a user already has (annotators' complementary labels or candidate sets) come from ``weak_column`` of
a Hugging Face ``dataset`` instead: class indices, lists of class indices or 0/1 masks per row. Every weak label
is checked against the convention: a complementary label never equals the true class, a candidate set always
holds it (where clean labels exist, i.e. every row of the splits here).

The realised quantities are recorded (``mean_set_size``). Validation keeps the same weak labelling (model selection
from weak labels only: ``val/weak_risk``) and its clean labels for reports (``val/acc``); the test set is clean.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from aipflow.data import EpochShuffleSampler, training_epoch
from aipflow.tasks import Task
from aipflow_weaksup._distributed import share_rows, whole_split
from aipflow_weaksup.data import IndexedTensorDataset, WeakLabelDataModule
from aipflow_weaksup.risks.complementary import ComplementaryLoss, check_complementary_prior, check_transition
from aipflow_weaksup.risks.partial import PartialLabelLoss, cc_loss

WEAK_KINDS = ("complementary", "partial")
COMPLEMENTARY_KINDS = ("uniform", "biased")


class WeakDataset(IndexedTensorDataset):
    fields = ("x", "weak", "y")


def complementary_labels(y: np.ndarray, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` classes per sample, uniform among those != y: indices ``(N,)`` for one, a mask ``(N, K)`` else."""
    if not 1 <= count <= k - 1:
        raise ValueError(f"data.num_complementary must lie in [1, {k - 1}] for {k} classes, got {count}")
    if count == 1:
        shift = rng.integers(1, k, size=len(y))  # uniform over the other k - 1 classes
        return (y + shift) % k
    mask = np.zeros((len(y), k), dtype=np.int64)
    for i, label in enumerate(y):
        others = np.delete(np.arange(k), label)
        mask[i, rng.choice(others, count, replace=False)] = 1
    return mask


def check_weak_labels(weak: np.ndarray, y: np.ndarray, kind: str, k: int) -> None:
    """Complementary labels exclude the true class; candidate sets hold it; neither is empty or all K classes."""
    mask = weak if weak.ndim == 2 else np.eye(k, dtype=np.int64)[weak]
    if mask.shape != (len(y), k):
        raise ValueError(f"weak labels must be (N,) class ids or an (N, {k}) mask, got shape {weak.shape}")
    size, hit = mask.sum(1), mask[np.arange(len(y)), y]
    if kind == "complementary":
        bad = np.flatnonzero((hit != 0) | (size < 1) | (size > k - 1))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"sample {i}: complementary labels {np.flatnonzero(mask[i]).tolist()} must exclude its true class "
                f"{int(y[i])} and hold 1 to {k - 1} classes"
            )
    else:
        bad = np.flatnonzero(hit != 1)
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"sample {i}: candidate set {np.flatnonzero(mask[i]).tolist()} lacks its true class {int(y[i])} "
                "(the partial-label convention requires it)"
            )


def weak_labels_from_column(values: list, k: int) -> np.ndarray:
    """A user's weak-label column: ints (one class each) stay indices; lists of K 0/1 are masks; other lists are
    class indices, turned into masks."""
    if all(isinstance(v, (int, np.integer)) for v in values):
        return np.asarray(values, dtype=np.int64)
    mask = np.zeros((len(values), k), dtype=np.int64)
    for i, v in enumerate(values):
        v = list(v)
        if len(v) == k and set(v) <= {0, 1}:
            mask[i] = v
        else:
            if any(not 0 <= int(c) < k for c in v):
                raise ValueError(f"sample {i}: weak label classes {v} must lie in [0, {k - 1}]")
            mask[i, [int(c) for c in v]] = 1
    return mask


def biased_transition(k: int, support: int, rng: np.random.Generator) -> np.ndarray:
    """Q (K, K): row y spread over ``support`` classes other than y, flat-Dirichlet weights, zero elsewhere."""
    if not 1 <= support <= k - 1:
        raise ValueError(f"data.biased_support must lie in [1, {k - 1}] for {k} classes, got {support}")
    q = np.zeros((k, k))
    for label in range(k):
        chosen = rng.choice(np.delete(np.arange(k), label), support, replace=False)
        q[label, chosen] = rng.dirichlet(np.ones(support))
    return q


PARTIAL_KINDS = ("binomial", "pair")


def partial_labels(y: np.ndarray, k: int, q: float, rng: np.random.Generator, kind: str = "binomial") -> np.ndarray:
    """Candidate sets: the true class, and each other class with probability ``q`` (``binomial``), or only its
    partner class ``(y + 1) mod K`` with probability ``q`` (``pair``)."""
    if not 0.0 <= q < 1.0:
        raise ValueError(f"data.partial_q must lie in [0, 1), got {q}")
    if kind not in PARTIAL_KINDS:
        raise ValueError(f"data.partial must be one of {PARTIAL_KINDS}, got {kind!r}")
    rows = np.arange(len(y))
    if kind == "binomial":
        mask = (rng.random((len(y), k)) < q).astype(np.int64)
    else:
        mask = np.zeros((len(y), k), dtype=np.int64)
        mask[rows, (y + 1) % k] = rng.random(len(y)) < q
    mask[rows, y] = 1
    return mask


class WeakDigitsDataModule(WeakLabelDataModule):
    """Digits (or any labelled ``dataset``: see :func:`aipflow_weaksup.data.load_labelled`) with complementary or
    partial labels; see the module docstring for the conventions. ``num_classes`` is read from the labels."""

    def __init__(
        self,
        weak: str = "complementary",
        num_complementary: int = 1,
        complementary: str = "uniform",
        biased_support: int = 3,
        partial_q: float = 0.3,
        partial: str = "binomial",
        weak_column: str | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        label_seed: int = 0,
        dataset: str = "digits",
        feature_column: str | None = None,
        label_column: str = "label",
    ) -> None:
        super().__init__()
        if weak not in WEAK_KINDS:
            raise ValueError(f"data.weak must be one of {WEAK_KINDS}, got {weak!r}")
        if partial not in PARTIAL_KINDS:
            raise ValueError(f"data.partial must be one of {PARTIAL_KINDS}, got {partial!r}")
        if complementary not in COMPLEMENTARY_KINDS:
            raise ValueError(f"data.complementary must be one of {COMPLEMENTARY_KINDS}, got {complementary!r}")
        if complementary == "biased" and num_complementary != 1:
            raise ValueError(
                f"data.complementary: biased draws one label per sample, got num_complementary={num_complementary}"
            )
        self.save_hyperparameters()
        self.num_classes = 10
        self.mean_set_size: float | None = None
        self.transition: np.ndarray | None = None
        self.complementary_prior: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        hp = self.hparams
        x, y, (train_idx, val_idx, test_idx) = self.splits(lambda labels: labels)
        self.num_classes = int(y.max()) + 1
        rng = np.random.default_rng(hp.label_seed)
        given = None
        if hp.weak_column is not None:
            from aipflow_weaksup.data import dataset_column, open_dataset

            if hp.dataset == "digits":
                raise ValueError("data.weak_column needs a Hugging Face data.dataset that holds the weak labels")
            column = dataset_column(open_dataset(hp.dataset), hp.weak_column, "weak_column", hp.dataset)
            given = weak_labels_from_column(list(column), self.num_classes)
        if hp.weak == "complementary" and hp.complementary == "biased" and hp.weak_column is None:
            self.transition = biased_transition(self.num_classes, hp.biased_support, rng)

        def weak_of(ids):
            weak = generate(ids) if given is None else given[ids]
            check_weak_labels(weak, y[ids], hp.weak, self.num_classes)
            return weak

        def generate(ids):
            if self.transition is not None:
                return np.array([rng.choice(self.num_classes, p=self.transition[label]) for label in y[ids]])
            if hp.weak == "complementary":
                return complementary_labels(y[ids], self.num_classes, hp.num_complementary, rng)
            return partial_labels(y[ids], self.num_classes, hp.partial_q, rng, hp.partial)

        def make(ids, weak):
            return WeakDataset(torch.from_numpy(x[ids]), torch.from_numpy(weak), torch.from_numpy(y[ids]))

        train_weak = weak_of(train_idx)
        self.train_set = make(train_idx, train_weak)
        self.val_set = make(val_idx, weak_of(val_idx))
        self.test_set = make(test_idx, np.zeros(len(test_idx), dtype=np.int64))
        self.mean_set_size = float(train_weak.sum(1).mean()) if train_weak.ndim == 2 else 1.0
        if hp.weak == "complementary" and train_weak.ndim == 1:  # p(c = j), what the stratified estimator needs
            self.complementary_prior = np.bincount(train_weak, minlength=self.num_classes) / len(train_weak)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(len(self.train_set), self.hparams.label_seed, training_epoch(self))
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, sampler=sampler)


class WeakMulticlassTask(Task):
    """Train a classifier from complementary labels (``ComplementaryLoss``) or partial labels
    (``PartialLabelLoss``). Model selection needs no clean labels: ``val/weak_risk`` is the complementary loss
    itself, or the CC loss for partial labels (PRODEN / RC weights belong to training samples). ``val/acc`` and
    ``test/acc`` use the clean labels, for reports only.

    Args:
        model: the network, ``(N, d) -> (N, num_classes)`` logits.
        loss: ``ComplementaryLoss`` or ``PartialLabelLoss``.
        **kwargs: :class:`aipflow.tasks.Task`'s ``optimizer`` (the core's default, AdamW lr 1e-3 weight decay
            1e-2, when omitted; the recipes name theirs), ``lr_scheduler`` and ``lr_scheduler_interval``.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, **kwargs) -> None:
        if not isinstance(loss, (ComplementaryLoss, PartialLabelLoss)):
            raise TypeError(f"model.loss must be ComplementaryLoss or PartialLabelLoss, got {type(loss).__name__}")
        super().__init__(model, **kwargs)
        self.loss = loss

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.trainer.datamodule if self.trainer is not None else None
        if isinstance(self.loss, PartialLabelLoss) and self.loss.num_samples is None and dm is not None:
            self.loss.num_samples = dm.train_size
        prior = getattr(dm, "complementary_prior", None)
        if isinstance(self.loss, ComplementaryLoss) and self.loss.kind == "unbiased" and prior is not None:
            if self.loss.complementary_prior is None:
                self.loss.complementary_prior = check_complementary_prior(prior, len(prior))
        transition = getattr(dm, "transition", None)
        if isinstance(self.loss, ComplementaryLoss) and self.loss.kind == "forward" and transition is not None:
            if self.loss.transition is None:  # Yu et al.: Q known (recorded by the data module)
                self.loss.transition = check_transition(transition, len(transition))

    def _loss(self, logits, batch) -> torch.Tensor:
        if isinstance(self.loss, PartialLabelLoss):
            return self.loss(logits, batch["weak"], batch["index"])
        return self.loss(logits, batch["weak"])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["x"]), batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        if isinstance(self.loss, PartialLabelLoss) and self.loss.weights.numel():  # PRODEN / RC / LWS weights
            share_rows(self, batch["index"], [self.loss.weights, self.loss.pending])
        return loss

    def on_train_epoch_end(self) -> None:
        if isinstance(self.loss, PartialLabelLoss):
            self.loss.end_epoch()

    def validation_step(self, batch, batch_idx: int) -> None:
        batch = whole_split(self, batch, logits=self(batch["x"]))
        logits = batch["logits"]
        if isinstance(self.loss, PartialLabelLoss):
            weak = cc_loss(logits, batch["weak"])
        else:
            weak = self.loss.evaluate(logits, batch["weak"])[1]
        self.log("val/weak_risk", weak, prog_bar=True)
        self.log("val/acc", (logits.argmax(1) == batch["y"]).float().mean(), prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        batch = whole_split(self, batch, logits=self(batch["x"]))
        self.log("test/acc", (batch["logits"].argmax(1) == batch["y"]).float().mean(), batch_size=len(batch["y"]))

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``aipflow predict``'s columns: ``index``, the true ``label`` when the batch has it, ``predicted`` and the
        class probabilities ``prob``."""
        probs = self(batch["x"]).float().softmax(1)
        out = {"index": batch["index"]} if "index" in batch else {}
        if "y" in batch:
            out["label"] = batch["y"]
        return out | {"predicted": probs.argmax(1), "prob": probs}
