"""TIcE, tree induction for c estimation (Bekker & Davis, AAAI 2018).

Under SCAR the labelled rows of any subset S of the data are a ``c``-fraction of its positives, so
``L_S / |S| <= c`` with equality on a subset of positives only. A one-sided Chebyshev (Cantelli) bound turns a
subset's labelled fraction into a lower bound that holds with probability ``1 - delta``:

    c_S = L_S / |S| - sqrt(c (1 - c) (1 - delta) / (delta |S|)),   delta = max(0.025, 1 / (1 + 0.004 |D|)),

and TIcE looks for subsets with a high bound by growing a decision tree best first (features min-max scaled and
cut at 0.25 / 0.5 / 0.75; the split maximising ``max-bepp(k) = max_child L / (T + k)``, k = 5; each feature once
per path; at most 500 splits; nodes of fewer than 10 rows are not split; children that cannot beat the current
best bound are not expanded). The tree is grown on one fold and every node's bound is evaluated on the other
folds; the estimate is the mean over 5 folds, and the variance term's ``c`` is refined over 2 iterations
(starting from 0.5). The unlabelled rows' prior follows from ``c`` as for Elkan-Noto.
"""

from __future__ import annotations

import heapq

import numpy as np

from aipflow_weaksup.prior._common import PriorEstimate, bootstrap_interval, check_pu_sample, prior_from_c

BORDERS = (0.25, 0.5, 0.75)


def pick_delta(n: int) -> float:
    return max(0.025, 1.0 / (1.0 + 0.004 * n))


def lower_bound(total: int, labeled: int, delta: float, c: float) -> float:
    if total == 0:
        return 0.0
    return labeled / total - np.sqrt(c * (1 - c) * (1 - delta) / (delta * total))


def binned_features(x: np.ndarray) -> np.ndarray:
    """One-hot bins ``(n, d, 4)`` of each min-max scaled feature."""
    span = x.max(0) - x.min(0)
    scaled = (x - x.min(0)) / np.where(span > 0, span, 1.0)
    bins = np.searchsorted(np.asarray(BORDERS), scaled, side="right")  # 0..3
    return bins[:, :, None] == np.arange(len(BORDERS) + 1)


def _fold_c(
    onehot: np.ndarray,
    s: np.ndarray,
    grow: np.ndarray,
    held_out: np.ndarray,
    c_prior: float,
    k: int,
    max_splits: int,
    min_rows: int,
) -> float:
    """The best lower bound on c over the held-out rows of the nodes of a tree grown on ``grow`` rows."""
    delta = pick_delta(len(held_out))
    labeled = s == 1
    best = labeled[held_out].mean()  # the whole set (no correction): c >= L / |D| always
    root_bound = lower_bound(len(held_out), int(labeled[held_out].sum()), delta, c_prior)
    best = max(best, root_bound) if len(held_out) >= min_rows else best
    n_features = onehot.shape[1]
    counter = 0  # tie-breaker for the heap
    queue = [
        (
            -lower_bound(len(grow), int(labeled[grow].sum()), delta, c_prior),
            counter,
            grow,
            held_out,
            np.ones(n_features, dtype=bool),
        )
    ]
    needed_labels = 1.0
    for _ in range(max_splits):
        if not queue:
            break
        _, _, rows, rows_out, available = heapq.heappop(queue)
        features = np.flatnonzero(available)
        if len(features) == 0:
            continue
        grow_total = onehot[rows][:, features].sum(0)  # (f, 4)
        grow_labeled = onehot[rows[labeled[rows]]][:, features].sum(0)
        out_labeled = onehot[rows_out[labeled[rows_out]]][:, features].sum(0)
        useful = out_labeled.max(1) >= needed_labels
        score = np.where(useful, (grow_labeled / (grow_total + k)).max(1), -1.0)
        pick = int(np.argmax(score))
        if score[pick] <= 0:
            continue
        feature = features[pick]
        children_out = [rows_out[onehot[rows_out, feature, b]] for b in range(onehot.shape[2])]
        if sum(len(child) > 0 for child in children_out) <= 1:  # the split separates nothing held out
            continue
        children = [rows[onehot[rows, feature, b]] for b in range(onehot.shape[2])]
        for child_out in children_out:
            if len(child_out) >= min_rows:
                best = max(best, lower_bound(len(child_out), int(labeled[child_out].sum()), delta, c_prior))
        # a node needs this many labelled rows before its bound could pass the best one
        needed_labels = c_prior * (1 - c_prior) * (1 - delta) / (delta * (1 - best) ** 2)
        left = available.copy()
        left[feature] = False
        left[features[~useful]] = False
        for child, child_out in zip(children, children_out, strict=True):
            n_lab = int(labeled[child].sum())
            if labeled[child_out].sum() > needed_labels and len(child) > min_rows and 0 < n_lab < len(child):
                counter += 1
                bound = lower_bound(len(child), n_lab, delta, c_prior)
                heapq.heappush(queue, (-bound, counter, child, child_out, left))
    return float(best)


def tice_c(
    x: np.ndarray,
    s: np.ndarray,
    rng: np.random.Generator,
    folds: int = 5,
    iterations: int = 2,
    k: int = 5,
    max_splits: int = 500,
    min_rows: int = 10,
) -> float:
    onehot = binned_features(x)
    assignment = rng.integers(0, folds, len(s))
    c = 0.5
    for _ in range(iterations):
        estimates = [
            _fold_c(
                onehot, s, np.flatnonzero(assignment == f), np.flatnonzero(assignment != f), c, k, max_splits, min_rows
            )
            for f in range(folds)
            if (assignment == f).any() and (assignment != f).any()
        ]
        c = float(np.mean(estimates))
    return c


def tice_prior(x, s, n_bootstrap: int = 0, seed: int = 0, folds: int = 5, max_splits: int = 500) -> PriorEstimate:
    """The class prior of the unlabelled rows of ``(x, s)`` (``s`` 1 = labelled positive, 0 = unlabelled)."""
    x, s = check_pu_sample(x, s)
    rng = np.random.default_rng(seed)

    def estimate_c(xb, sb, r):
        return tice_c(xb, sb, r, folds=folds, max_splits=max_splits)

    c = estimate_c(x, s, rng)
    result = PriorEstimate(prior_from_c(c, s), c, "tice")
    if n_bootstrap:
        result.interval = bootstrap_interval(
            lambda xb, sb, r: prior_from_c(estimate_c(xb, sb, r), sb), x, s, n_bootstrap, rng
        )
    return result
