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


def bootstrap_intervals(gold: np.ndarray, pseudo: np.ndarray, seed: int, num_resamples: int = 1000,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of pi, theta_p, theta_n and delta over resamples of the labeled items."""
    gold, pseudo = np.asarray(gold, dtype=float), np.asarray(pseudo).astype(bool)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(gold), size=(num_resamples, len(gold)))
    g, p = gold[draws], pseudo[draws]
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_p = (g * p).sum(1) / p.sum(1)
        theta_n = (g * ~p).sum(1) / (~p).sum(1)
    stats = {"prior": g.mean(1), "theta_p": theta_p, "theta_n": theta_n, "delta": theta_p - theta_n}
    tail = (1 - level) / 2 * 100
    return {k: tuple(float(x) for x in np.nanpercentile(v, [tail, 100 - tail])) for k, v in stats.items()}


def check_priors(priors: Priors, min_delta: float) -> Priors:
    """Refuse priors UU learning cannot use: theta undefined, or delta not clearly positive."""
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
    return priors


def oracle_priors(gold: np.ndarray, pseudo: np.ndarray, min_delta: float = 0.0) -> Priors:
    """Priors from the gold labels of the whole corpus (a benchmark upper bound, not a real-world mode)."""
    return check_priors(Priors(*point_estimate(gold, pseudo), source="oracle"), min_delta)


def labeled_priors(gold_sample: np.ndarray, pseudo_sample: np.ndarray, seed: int,
                   min_delta: float = 0.0) -> Priors:
    """Priors from the fixed labeled sample L: gold labels of L and the current pseudo-labels of L's items."""
    gold_sample = np.asarray(gold_sample)
    if len(np.unique(gold_sample)) < 2:
        raise PriorError(f"labeled[{len(gold_sample)}]: the labeled sample holds only gold class "
                         f"{int(gold_sample[0]) if len(gold_sample) else 'none'}; pi and theta need both classes")
    return check_priors(
        Priors(*point_estimate(gold_sample, pseudo_sample), source=f"labeled[{len(gold_sample)}]",
               interval=bootstrap_intervals(gold_sample, pseudo_sample, seed)),
        min_delta,
    )
