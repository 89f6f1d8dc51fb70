"""Out-of-fold scores of a labelled-vs-unlabelled ("non-traditional") classifier, for the classifier-based prior
estimators: each row is scored by a classifier that never saw it (k-fold cross-fitting, as DEDPUL does: with
~100 labelled positives a single hold-out split leaves too few of them to rank).

The classifier is scikit-learn's logistic regression (``classifier=None``) or any torch network mapping ``(n, d)``
rows to ``(n, 1)`` logits (e.g. the task's own model): each fold trains a re-initialised copy with binary
cross-entropy and Adam, and keeps the epoch whose held-out cross-entropy is lowest (such networks memorise the
labelled rows within a few epochs, after which held-out positives no longer rank above the negatives).
"""

from __future__ import annotations

import copy

import numpy as np


def out_of_fold_scores(
    x: np.ndarray,
    s: np.ndarray,
    classifier=None,
    folds: int = 5,
    seed: int = 0,
    max_epochs: int = 15,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 5e-3,
    progress: bool = False,
) -> np.ndarray:
    """Score ``p(s = 1 | x)`` (or a monotone function of it) of every row, from a classifier fitted without it;
    ``progress`` shows a bar over the folds."""
    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if min(int(s.sum()), int((s == 0).sum())) < folds:
        raise ValueError(f"{folds}-fold scoring needs at least {folds} labelled and {folds} unlabelled rows")
    scores = np.zeros(len(s))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, s)
    bar = tqdm(split, total=folds, desc="prior: scoring folds", disable=not progress, leave=False)
    for fold, (fit_idx, held_idx) in enumerate(bar):
        if classifier is None:
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(max_iter=2000).fit(x[fit_idx], s[fit_idx])
            scores[held_idx] = model.decision_function(x[held_idx])
        else:
            scores[held_idx] = _network_scores(
                classifier,
                (x[fit_idx], s[fit_idx]),
                (x[held_idx], s[held_idx]),
                seed * 1000 + fold,
                max_epochs,
                batch_size,
                lr,
                weight_decay,
            )
    return scores


def _network_scores(template, fit, held, seed, max_epochs, batch_size, lr, weight_decay) -> np.ndarray:
    """Held-out logits of a re-initialised copy of ``template`` trained on ``fit`` (rows, 0/1 labels)."""
    import torch
    from torch.nn import functional as F

    from aipflow.models import reinitialize

    device = next(template.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = copy.deepcopy(template)
        reinitialize(net)  # a fresh initialisation per fold, not the template's weights (pretrained ones kept)
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        x_fit, s_fit, x_held, s_held = (torch.as_tensor(a, device=device).float() for a in (*fit, *held))
        best_loss, best = float("inf"), None
        for _ in range(max_epochs):
            net.train()
            order = torch.randperm(len(x_fit), device=device)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                if len(batch) < 2:  # batch norm cannot train on a single row
                    continue
                loss = F.binary_cross_entropy_with_logits(net(x_fit[batch]).reshape(-1), s_fit[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                logits = torch.cat([net(chunk).reshape(-1) for chunk in x_held.split(4096)])
                held_loss = F.binary_cross_entropy_with_logits(logits, s_held).item()
            if held_loss < best_loss:
                best_loss, best = held_loss, logits.double().cpu().numpy()
    return best
