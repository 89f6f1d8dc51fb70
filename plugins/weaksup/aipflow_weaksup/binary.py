"""Binary weak labels other than PU from any labelled data (``y`` in {+1, -1}), and digits as such data.

Conventions (``setting``; the group codes are those of :mod:`aipflow_weaksup.risks.binary`):

- ``"pnu"``: ``n_labeled`` rows drawn uniformly (so the labelled set has the class prior pi), the rest unlabelled;
- ``"uu"``: two unlabelled sets of equal size with class priors ``theta`` > ``theta2`` (Lu et al. 2019), as large
  as the split allows; the realised priors are recorded (``theta``, ``theta2``) and are what the risk uses;
- ``"su"``: the rows are split at random into a pair pool and an unlabelled pool (``pair_fraction``); similar
  pairs are drawn from the pair pool, both positive with probability ``pi^2 / (pi^2 + (1 - pi)^2)``, else both
  negative (Bao et al. 2018); the unlabelled pool is a sample of the marginal;
- ``"sd"``: pairs from the pair pool (all rows), positive-positive / negative-negative / mixed with probabilities
  ``pi^2``, ``(1 - pi)^2``, ``2 pi (1 - pi)``; the first two are similar, the third dissimilar;
- ``"pcomp"``: pairs of independent draws with the (negative, positive) ones left out (Feng et al. 2021), so the
  first element is at least as likely positive as the second;
- ``"pconf"``: the positives only, each with its confidence ``r(x) = p(y = +1 | x)`` from a logistic regression
  fitted on the split's clean labels (the benchmark protocol of Ishida et al. 2018), clipped below at
  ``min_confidence``.

SU and SD cannot tell the classes apart at pi = 1/2: the digits module's ``positive_classes`` sets pi (digits
0-6 against 7-9 gives pi ~ 0.7). Pairs are pooled pointwise (both elements of a pair are rows of the set).
Validation keeps the same weak labelling (model selection from weak labels only); the test set is clean.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from aipflow_weaksup.data import IndexedTensorDataset, WeakLabelDataModule, stratified_loader
from aipflow_weaksup.risks.binary import SETTINGS


class BinaryWeakDataset(IndexedTensorDataset):
    fields = ("x", "group", "y", "confidence")


def _take(pool: list[int], count: int) -> list[int]:
    taken = pool[:count]
    del pool[:count]
    return taken


def _pairs(
    positives: list[int], negatives: list[int], kinds: tuple[str, ...], weights: np.ndarray, rng: np.random.Generator
) -> list[tuple[str, int, int]]:
    """Draw pair kinds ('pp', 'nn', 'pn') with ``weights`` until a pool runs out; each pair's two rows."""
    pairs = []
    while True:
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        need_p, need_n = kind.count("p"), kind.count("n")
        if len(positives) < need_p or len(negatives) < need_n:
            return pairs
        first = _take(positives, 1)[0] if kind[0] == "p" else _take(negatives, 1)[0]
        second = _take(positives, 1)[0] if kind[1] == "p" else _take(negatives, 1)[0]
        pairs.append((kind, first, second))


def weak_binary_labels(
    y: np.ndarray,
    setting: str,
    rng: np.random.Generator,
    n_labeled: int = 100,
    theta: float = 0.8,
    theta2: float = 0.2,
    pair_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Rows (indices into ``y``), their group codes, and the realised quantities of the setting."""
    if setting not in SETTINGS or setting == "pconf":
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    n = len(y)
    order = rng.permutation(n)
    prior = float((y == 1).mean())
    if setting == "pnu":
        if not 2 <= n_labeled < n:
            raise ValueError(f"data.n_labeled must lie in [2, {n - 1}] for {n} rows, got {n_labeled}")
        group = np.zeros(n, dtype=np.int64)
        group[order[:n_labeled]] = y[order[:n_labeled]]
        return np.arange(n), group, {"prior": prior}
    positives = [int(i) for i in order if y[i] == 1]
    negatives = [int(i) for i in order if y[i] == -1]
    if setting == "uu":
        if not 0.0 <= theta2 < theta <= 1.0:
            raise ValueError(f"data.theta and data.theta2 need 0 <= theta2 < theta <= 1, got {theta}, {theta2}")
        size = int(min(len(positives) / (theta + theta2), len(negatives) / (2 - theta - theta2)))
        first_pos, second_pos = round(size * theta), round(size * theta2)
        first = _take(positives, first_pos) + _take(negatives, size - first_pos)
        second = _take(positives, second_pos) + _take(negatives, size - second_pos)
        rows = np.array(first + second)
        group = np.r_[np.zeros(len(first), dtype=np.int64), np.ones(len(second), dtype=np.int64)]
        return rows, group, {"prior": prior, "theta": first_pos / size, "theta2": second_pos / size}
    pp, pn = prior, 1 - prior
    if setting == "su":
        if not 0.0 < pair_fraction < 1.0:
            raise ValueError(f"data.pair_fraction must lie in (0, 1), got {pair_fraction}")
        cut = int(n * pair_fraction)
        pool, unlabeled = order[:cut], order[cut:]
        pairs = _pairs(
            [int(i) for i in pool if y[i] == 1],
            [int(i) for i in pool if y[i] == -1],
            ("pp", "nn"),
            np.array([pp**2, pn**2]),
            rng,
        )
        similar = [i for _, a, b in pairs for i in (a, b)]
        rows = np.array(similar + [int(i) for i in unlabeled])
        group = np.r_[np.ones(len(similar), dtype=np.int64), np.zeros(len(unlabeled), dtype=np.int64)]
        return rows, group, {"prior": prior, "n_pairs": float(len(pairs))}
    if setting == "sd":
        pairs = _pairs(positives, negatives, ("pp", "nn", "pn"), np.array([pp**2, pn**2, 2 * pp * pn]), rng)
        rows = np.array([i for _, a, b in pairs for i in (a, b)])
        group = np.array([code for kind, _, _ in pairs for code in [2 if kind == "pn" else 1] * 2], dtype=np.int64)
        return rows, group, {"prior": prior, "n_pairs": float(len(pairs)), "dissimilar": float((group == 2).mean())}
    # pcomp: independent draws, (negative, positive) left out
    pairs = _pairs(positives, negatives, ("pp", "pn", "nn"), np.array([pp**2, pp * pn, pn**2]), rng)
    rows = np.array([i for _, a, b in pairs for i in (a, b)])
    group = np.tile(np.array([1, 2], dtype=np.int64), len(pairs))
    return rows, group, {"prior": prior, "n_pairs": float(len(pairs))}


def positive_confidence(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, min_confidence: float) -> np.ndarray:
    """``p(y = +1 | x)`` from a logistic regression on clean labels, clipped to [min_confidence, 1]."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=1.0).fit(x_fit, y_fit)
    return np.clip(clf.predict_proba(x)[:, list(clf.classes_).index(1)], min_confidence, 1.0)


class BinaryWeakDigitsDataModule(WeakLabelDataModule):
    """Digits (``positive_classes`` against the rest) in one binary weak-label setting; see the module docstring.
    Any labelled ``dataset`` works the same way (see :func:`aipflow_weaksup.data.load_labelled`).
    Records ``prior`` (the class prior the risks need), and for UU the realised ``theta`` / ``theta2``."""

    def __init__(
        self,
        setting: str = "uu",
        positive_classes: list[int] | None = None,
        n_labeled: int = 100,
        theta: float = 0.8,
        theta2: float = 0.2,
        pair_fraction: float = 0.5,
        min_confidence: float = 0.05,
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
        if setting not in SETTINGS:
            raise ValueError(f"data.setting must be one of {SETTINGS}, got {setting!r}")
        if not 0.0 < min_confidence <= 1.0:
            raise ValueError(f"data.min_confidence must lie in (0, 1], got {min_confidence}")
        self.save_hyperparameters()
        self.positive_classes = [0, 2, 4, 6, 8] if positive_classes is None else list(positive_classes)
        self.prior: float | None = None
        self.realised: dict[str, float] = {}

    def _weak(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, x_fit, y_fit):
        hp = self.hparams
        if hp.setting == "pconf":
            rows = np.flatnonzero(y == 1)
            confidence = positive_confidence(x_fit, y_fit, x[rows], hp.min_confidence)
            return rows, np.ones(len(rows), dtype=np.int64), confidence, {"prior": float((y == 1).mean())}
        rows, group, realised = weak_binary_labels(
            y, hp.setting, rng, hp.n_labeled, hp.theta, hp.theta2, hp.pair_fraction
        )
        return rows, group, np.ones(len(rows)), realised

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        hp = self.hparams
        x, y, (train_idx, val_idx, test_idx) = self.binary_splits()
        rng = np.random.default_rng(hp.label_seed)
        x_fit, y_fit = x[train_idx], y[train_idx]

        def make(ids: np.ndarray, weak: bool):
            if not weak:
                return BinaryWeakDataset(
                    torch.from_numpy(x[ids]),
                    torch.zeros(len(ids), dtype=torch.long),
                    torch.from_numpy(y[ids]),
                    torch.ones(len(ids)),
                ), {}
            rows, group, confidence, realised = self._weak(x[ids], y[ids], rng, x_fit, y_fit)
            ids = ids[rows]
            dataset = BinaryWeakDataset(
                torch.from_numpy(x[ids]),
                torch.from_numpy(group),
                torch.from_numpy(y[ids]),
                torch.from_numpy(confidence).float(),
            )
            return dataset, realised

        self.train_set, self.realised = make(train_idx, True)
        self.val_set, self.val_realised = make(val_idx, True)
        self.test_set, _ = make(test_idx, False)
        self.prior = self.realised["prior"]
        self.theta, self.theta2 = self.realised.get("theta"), self.realised.get("theta2")

    def train_dataloader(self) -> DataLoader:
        return stratified_loader(self.train_set, self.train_set.group, self.hparams.batch_size, self.hparams.label_seed)
