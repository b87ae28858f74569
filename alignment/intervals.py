"""Confidence intervals for the safety evaluation's rates and their before/after differences.

* :func:`wilson_interval`: a binomial rate (harmless share of N replies), Wilson's score interval, which stays
  inside [0, 1] and behaves at 0/N and N/N, where the Wald interval collapses to a point.
* :func:`paired_difference_interval`: the change of a rate between two measurements of the SAME prompts (before
  and after RL, or two best-of-n arms on one shared set of replies): Newcombe's (1998) method 10, which combines the
  two Wilson intervals through the correlation of the paired outcomes. Pairing matters: two policies that agree on
  most prompts have a much narrower interval for their difference than two independent samples would.
* :func:`mean_interval`: the mean of a few independent runs (seeds) with a Student-t interval.
* :func:`agreement`: how often two binary views of the same items agree, and Cohen's kappa;
  :func:`kappa_interval` adds its large-sample interval.
* :func:`ranking_auc` / :func:`auc_interval`: how well a score ranks positives first, with Hanley & McNeil's interval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (low <= value <= high)."""

    value: float
    low: float
    high: float

    def text(self, digits: int = 3, sign: bool = False) -> str:
        """'0.250 [0.123, 0.432]' (with `sign`: '+0.250 [...]', for differences)."""
        spec = f"{'+' if sign else ''}.{digits}f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """The rate successes/n with Wilson's score interval."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z = _z(confidence)
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(rate, max(0.0, centre - half), min(1.0, centre + half))


def rate_interval(outcomes: Sequence[bool], confidence: float = 0.95) -> Estimate:
    """Wilson's interval of the share of True outcomes."""
    return wilson_interval(sum(bool(o) for o in outcomes), len(outcomes), confidence)


def paired_difference_interval(before: Sequence[bool], after: Sequence[bool],
                               confidence: float = 0.95) -> Estimate:
    """rate(after) − rate(before) on the same items, with Newcombe's method-10 interval.

    With a = both true, b = before only, c = after only, d = neither: the difference is (c − b)/n, the two rates'
    Wilson limits are combined with φ = (ad − bc)/√((a+b)(c+d)(a+c)(b+d)) (0 when a margin is empty)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need two equally long, non-empty outcome lists, got {len(before)} and {len(after)}")
    pairs = [(bool(x), bool(y)) for x, y in zip(before, after)]
    a = sum(x and y for x, y in pairs)
    b = sum(x and not y for x, y in pairs)
    c = sum(y and not x for x, y in pairs)
    d = len(pairs) - a - b - c
    n = len(pairs)
    first, second = wilson_interval(a + b, n, confidence), wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(margins) if margins else 0.0
    difference = second.value - first.value
    down_second, up_second = second.value - second.low, second.high - second.value
    down_first, up_first = first.value - first.low, first.high - first.value
    low = difference - math.sqrt(max(0.0, down_second ** 2 - 2 * phi * down_second * up_first + up_first ** 2))
    high = difference + math.sqrt(max(0.0, up_second ** 2 - 2 * phi * up_second * down_first + down_first ** 2))
    return Estimate(difference, max(-1.0, low), min(1.0, high))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The mean of independent runs with a Student-t interval (a point for a single run)."""
    if not values:
        raise ValueError("need at least one value")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half)


def agreement(first: Sequence[bool], second: Sequence[bool]) -> dict:
    """Share of items on which two binary views agree, and Cohen's kappa (agreement beyond chance; None when
    both views are constant and equal, where chance agreement is already 1)."""
    if len(first) != len(second) or not first:
        raise ValueError(f"need two equally long, non-empty lists, got {len(first)} and {len(second)}")
    n = len(first)
    observed = sum(bool(x) == bool(y) for x, y in zip(first, second)) / n
    chance = _chance_agreement(first, second)
    kappa = None if chance >= 1.0 else (observed - chance) / (1 - chance)
    return {"n": n, "agreement": observed, "kappa": kappa}


def _chance_agreement(first: Sequence[bool], second: Sequence[bool]) -> float:
    """How often two independent views with these positive rates would agree."""
    p1, p2 = sum(map(bool, first)) / len(first), sum(map(bool, second)) / len(second)
    return p1 * p2 + (1 - p1) * (1 - p2)


def ranking_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of `scores` against binary `labels` (None when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool).ravel()
    return float(roc_auc_score(labels, np.asarray(scores).ravel())) if 0 < labels.sum() < labels.size else None


def auc_interval(scores: Sequence[float], labels: Sequence[int], confidence: float = 0.95) -> Estimate:
    """ROC AUC of `scores` for `labels` (1 = positive) with Hanley & McNeil's (1982) interval: variance
    (A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)) / (n1 n0), Q1 = A/(2-A), Q2 = 2A^2/(1+A)."""
    labels = np.asarray(labels, dtype=bool)
    auc = ranking_auc(np.asarray(scores, dtype=float), labels)
    if auc is None:
        raise ValueError("AUC needs both classes among the labels")
    n1, n0 = int(labels.sum()), int((~labels).sum())
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)
    half = _z(confidence) * math.sqrt(max(0.0, variance))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))


def kappa_interval(first: Sequence[bool], second: Sequence[bool], confidence: float = 0.95) -> Estimate:
    """Cohen's kappa of two binary views with the large-sample interval kappa +- z sqrt(po(1-po)/n)/(1-pe)."""
    views = agreement(first, second)
    if views["kappa"] is None:
        raise ValueError("kappa is undefined when both views are constant and equal")
    n, observed, kappa = views["n"], views["agreement"], views["kappa"]
    half = _z(confidence) * math.sqrt(observed * (1 - observed) / n) / (1 - _chance_agreement(first, second))
    return Estimate(kappa, max(-1.0, kappa - half), min(1.0, kappa + half))
