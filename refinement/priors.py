"""Class priors of the UU risk: pi = P(y=1), theta_p = P(y=1 | pseudo 1), theta_n = P(y=1 | pseudo 0).

Two modes. Oracle: from the gold labels of the whole training corpus (benchmarks only). Few-labeled: from a
small i.i.d. gold sample L drawn once per run; theta is re-estimated every round on the same L with that
round's pseudo-labels, so no gold label outside L ever reaches training or model selection.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


class PriorError(ValueError):
    """The priors cannot support UU learning (empty pseudo-set, one-class sample, theta_p <= theta_n)."""


@dataclass(frozen=True)
class Priors:
    prior: float
    theta_p: float
    theta_n: float
    source: str  # "oracle" or "labeled[N]"
    interval: dict[str, tuple[float, float]] | None = None  # 95% bootstrap intervals (few-labeled mode)
    num_labeled: int | None = None  # size of the labeled sample (few-labeled mode)
    delta_lower: float | None = None  # one-sided bootstrap lower confidence bound of delta (few-labeled mode)
    confidence: float | None = None  # ... and its confidence

    @property
    def delta(self) -> float:
        return self.theta_p - self.theta_n

    def to_dict(self) -> dict:
        return {**asdict(self), "delta": self.delta}


def sample_labeled_indices(num_items: int, num_labeled: int, seed: int) -> np.ndarray:
    """An i.i.d. (uniform, without replacement) sample of item indices; never class-balanced, because a
    balanced sample biases theta whenever pi != 0.5."""
    if not 0 < num_labeled <= num_items:
        raise PriorError(f"num_labeled={num_labeled} must be in 1..{num_items} (the training corpus size)")
    return np.sort(np.random.default_rng(seed).choice(num_items, size=num_labeled, replace=False))


def point_estimate(gold: np.ndarray, pseudo: np.ndarray) -> tuple[float, float, float]:
    """(pi, theta_p, theta_n) of gold labels under pseudo-labels; NaN for an empty pseudo-set."""
    gold, pseudo = np.asarray(gold, dtype=float), np.asarray(pseudo).astype(bool)
    theta_p = gold[pseudo].mean() if pseudo.any() else float("nan")
    theta_n = gold[~pseudo].mean() if (~pseudo).any() else float("nan")
    return float(gold.mean()), float(theta_p), float(theta_n)


def bootstrap_draws(gold: np.ndarray, pseudo: np.ndarray, seed: int, num_resamples: int = 1000) -> dict:
    """pi, theta_p, theta_n and delta over `num_resamples` resamples (with replacement) of the labeled items."""
    gold, pseudo = np.asarray(gold, dtype=float), np.asarray(pseudo).astype(bool)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(gold), size=(num_resamples, len(gold)))
    g, p = gold[draws], pseudo[draws]
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_p = (g * p).sum(1) / p.sum(1)
        theta_n = (g * ~p).sum(1) / (~p).sum(1)
    return {"prior": g.mean(1), "theta_p": theta_p, "theta_n": theta_n, "delta": theta_p - theta_n}


def bootstrap_intervals(gold: np.ndarray, pseudo: np.ndarray, seed: int, num_resamples: int = 1000,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of pi, theta_p, theta_n and delta over resamples of the labeled items."""
    return percentile_intervals(bootstrap_draws(gold, pseudo, seed, num_resamples), level)


def percentile_intervals(draws: dict, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Two-sided percentile intervals of bootstrap draws (resamples with an empty pseudo-set are ignored)."""
    tail = (1 - level) / 2 * 100
    return {k: tuple(float(x) for x in np.nanpercentile(v, [tail, 100 - tail])) for k, v in draws.items()}


def delta_lower_bound(gold: np.ndarray, pseudo: np.ndarray, seed: int, confidence: float,
                      num_resamples: int = 1000) -> float:
    """One-sided percentile-bootstrap lower confidence bound of delta: P(delta >= bound) ~ `confidence`.
    A resample with an empty pseudo-set has no delta and counts as no signal."""
    return lower_bound(bootstrap_draws(gold, pseudo, seed, num_resamples)["delta"], confidence)


def lower_bound(deltas: np.ndarray, confidence: float) -> float:
    """The (1 - confidence) percentile of bootstrap deltas; a resample with no delta counts as no signal."""
    return float(np.percentile(np.nan_to_num(deltas, nan=-1.0), (1 - confidence) * 100))


def labels_needed(num_labeled: int, delta: float, lower: float, min_delta: float) -> int | None:
    """Labeled items for the lower bound to clear min_delta if delta stayed the same: the distance from the
    estimate to its bound shrinks as 1/sqrt(n). None when the point estimate itself is not above min_delta."""
    if not delta > min_delta:
        return None
    return int(np.ceil(num_labeled * ((delta - lower) / (delta - min_delta)) ** 2))


def check_priors(priors: Priors, min_delta: float, rule: str = "point") -> Priors:
    """Refuse priors UU learning cannot use: theta undefined, or delta not clearly positive. `rule="interval"`
    asks the one-sided bootstrap lower confidence bound of delta (few-labeled priors) to be above min_delta,
    since a 50-item sample can measure delta = 0.14 on labels at chance; oracle priors have no bound."""
    if rule not in ("point", "interval"):
        raise ValueError(f"prior guard rule {rule!r}: choose point or interval")
    if np.isnan(priors.theta_p) or np.isnan(priors.theta_n):
        raise PriorError(f"{priors.source}: a pseudo-set has no item, so theta_p or theta_n is undefined "
                         f"(theta_p={priors.theta_p}, theta_n={priors.theta_n})")
    if not priors.delta > min_delta:
        raise PriorError(
            f"{priors.source}: delta = theta_p - theta_n = {priors.theta_p:.3f} - {priors.theta_n:.3f} = "
            f"{priors.delta:.3f} is not above min_delta={min_delta}: the pseudo-labels carry (almost) no "
            "signal about the gold labels, and the UU risk would divide by ~0. Use a better annotator, "
            "more labeled items, or lower min_delta knowingly."
        )
    if rule == "interval" and priors.delta_lower is not None and not priors.delta_lower > min_delta:
        needed = labels_needed(priors.num_labeled, priors.delta, priors.delta_lower, min_delta)
        raise PriorError(
            f"{priors.source}: delta = theta_p - theta_n = {priors.delta:.3f}, but its {priors.confidence:.0%} "
            f"lower confidence bound {priors.delta_lower:.3f} (bootstrap) is not above min_delta={min_delta}: this "
            f"sample cannot tell the pseudo-labels from chance; about {needed} labeled items would be needed if "
            f"delta stayed {priors.delta:.3f}. Label more items, use a better annotator, or pass --prior_guard "
            "point knowingly."
        )
    return priors


def oracle_priors(gold: np.ndarray, pseudo: np.ndarray, min_delta: float | None = 0.0) -> Priors:
    """Priors from the gold labels of the whole corpus (a benchmark upper bound, not a real-world mode).
    `min_delta=None` estimates without checking."""
    priors = Priors(*point_estimate(gold, pseudo), source="oracle")
    return priors if min_delta is None else check_priors(priors, min_delta)


def labeled_priors(gold_sample: np.ndarray, pseudo_sample: np.ndarray, seed: int,
                   min_delta: float | None = 0.0, rule: str = "point", confidence: float = 0.8) -> Priors:
    """Priors from the fixed labeled sample L: gold labels of L and the current pseudo-labels of L's items.
    `min_delta=None` estimates without checking (a one-class sample is always refused)."""
    gold_sample = np.asarray(gold_sample)
    if len(np.unique(gold_sample)) < 2:
        raise PriorError(f"labeled[{len(gold_sample)}]: the labeled sample holds only gold class "
                         f"{int(gold_sample[0]) if len(gold_sample) else 'none'}; pi and theta need both classes")
    draws = bootstrap_draws(gold_sample, pseudo_sample, seed)  # one resampling for the interval and the bound
    priors = Priors(*point_estimate(gold_sample, pseudo_sample), source=f"labeled[{len(gold_sample)}]",
                    interval=percentile_intervals(draws), num_labeled=len(gold_sample),
                    delta_lower=lower_bound(draws["delta"], confidence), confidence=confidence)
    return priors if min_delta is None else check_priors(priors, min_delta, rule)
