"""How a trained round turns into the next round's pseudo-labels.

On frozen features a classifier that relabels with its own boundary feeds the next round two pseudo-sets split by
a hyperplane of the very features it trains on. That breaks the UU assumption (each set is a mixture of the *same*
class-conditional distributions) and the boundary drifts round after round. Four levers, combinable:

- anchor: add the annotator's round-0 score, a second view whose errors are not the classifier's, to the
  classifier's score (both standardized on the training split);
- ensemble: score with the mean of every round's standardized logits so far, so no single boundary dominates;
- cross-fitting (frozen backend): each training item is scored by a head that did not train on it;
- a second view (frozen backend): a head on another backbone's features scores the relabelling instead of the
  shipped head. A boundary the shipped head cannot draw in its own features leaves noise that looks closer to
  class-conditional to it. The view head learns from the annotator's labels once, or (co-training) every round
  from labels cut from the shipped head's scores.

A combined score has no meaningful zero, so it is cut at the prior-matching quantile (a share pi harmless).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .metrics import prior_matching_threshold


def standardize(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(values - mean) / std with the mean and std of `reference` (the training split's scores)."""
    std = float(np.std(reference))
    return (np.asarray(values, dtype=float) - float(np.mean(reference))) / (std if std > 0 else 1.0)


def relabel_scores(round_logits: Sequence[dict], anchor: dict | None, anchor_weight: float,
                   ensemble: bool) -> dict:
    """The score each split is relabelled by. `round_logits`: the logits of every trained round so far, oldest
    first (the last one is this round's); `anchor`: the annotator's round-0 scores (or labels) per split."""
    used = round_logits if ensemble else round_logits[-1:]
    combined = {s: np.mean([standardize(r[s], r["train"]) for r in used], axis=0) for s in used[-1]}
    if anchor is not None and anchor_weight:
        combined = {s: combined[s] + anchor_weight * standardize(anchor[s], anchor["train"]) for s in combined}
    return combined


def co_training_scores(main_logits: Sequence[dict], view_logits: Sequence[dict], anchor: dict | None,
                       anchor_weight: float, ensemble: bool) -> tuple[dict, dict]:
    """(the score the main head's next labels are cut from, the score the view head's are cut from): each head
    learns from the other's rounds so far (plus the anchor), never from its own boundary."""
    return (relabel_scores(view_logits, anchor, anchor_weight, ensemble),
            relabel_scores(main_logits, anchor, anchor_weight, ensemble))


def relabel(scores: dict, prior: float) -> tuple[dict, float]:
    """Hard labels at the threshold that calls a share `prior` of the training split harmless."""
    threshold = prior_matching_threshold(scores["train"], prior)
    return {s: (v > threshold).astype(np.int64) for s, v in scores.items()}, threshold


def crossfit_folds(pseudo: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """A fold index per item, stratified by pseudo-label so every fold holds both pseudo-sets."""
    if num_folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {num_folds}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(pseudo), dtype=np.int64)
    for label in (0, 1):
        members = np.flatnonzero(pseudo == label)
        if len(members) < num_folds:
            raise ValueError(f"cross-fitting: pseudo-set {label} has {len(members)} items, fewer than "
                             f"{num_folds} folds")
        folds[rng.permutation(members)] = np.arange(len(members)) % num_folds
    return folds


def out_of_fold_logits(folds: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
                       ) -> np.ndarray:
    """Each item's logit from a model fitted on the other folds: fit_predict(train_idx, held_out_idx)."""
    logits = np.empty(len(folds), dtype=float)
    for fold in np.unique(folds):
        held_out = np.flatnonzero(folds == fold)
        logits[held_out] = fit_predict(np.flatnonzero(folds != fold), held_out)
    return logits
