"""Confident learning (Northcutt et al., 2021) as a baseline: find likely label errors with cross-validated
probabilities on the same features, drop them, retrain on the rest. Real `cleanlab` calls."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.model_selection import StratifiedKFold


def cross_validated_probabilities(features: np.ndarray, pseudo: np.ndarray, folds: int, seed: int,
                                  fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
                                  ) -> np.ndarray:
    """Out-of-fold P(pseudo 1) per item; `fit_predict(train_idx, held_out_idx, fold)` returns logits of held_out."""
    probabilities = np.zeros(len(pseudo))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train_idx, held_out) in enumerate(splitter.split(features, pseudo)):
        probabilities[held_out] = 1 / (1 + np.exp(-fit_predict(train_idx, held_out, fold)))
    return probabilities


def keep_mask(pseudo: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """True for the items cleanlab does not flag as label issues."""
    from cleanlab.filter import find_label_issues

    pred_probs = np.stack([1 - probabilities, probabilities], axis=1)
    return ~find_label_issues(labels=pseudo.astype(int), pred_probs=pred_probs)
