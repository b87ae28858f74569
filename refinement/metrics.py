"""Quality of labels and scores against gold labels (evaluation only: never used for training in a
few-labeled run)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


def label_quality(gold: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """Accuracy and F1 (harmless = positive) of hard labels; AUC of scores when given and defined."""
    out = {"accuracy": float(np.mean(gold == predicted)), "f1": float(f1_score(gold, predicted, zero_division=0))}
    if scores is not None and len(np.unique(gold)) == 2 and np.all(np.isfinite(scores)):
        out["auc"] = float(roc_auc_score(gold, scores))
    return out


def estimated_accuracy(positive_rate: float, theta_p: float, theta_n: float) -> float:
    """Accuracy of pseudo-labels from their priors: P(y=1, pseudo 1) + P(y=0, pseudo 0) with the corpus's own
    positive rate; with few-labeled priors this uses only the labeled sample's gold labels."""
    return positive_rate * theta_p + (1 - positive_rate) * (1 - theta_n)


def prior_matching_threshold(train_logits: np.ndarray, prior: float) -> float:
    """The logit threshold above which a share `prior` of the training corpus lies.

    A classifier trained on weakly separated pseudo-sets ranks items better than it places its zero: its
    positive rate can drift far from pi (e.g. 0.9 when pi = 0.43), and the next round inherits that skew."""
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    return float(np.quantile(train_logits, 1 - prior))
