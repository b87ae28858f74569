"""Tests for refinement.priors: point estimates, oracle and few-labeled priors, the i.i.d. labeled sample, guards.

pi = P(y=1), theta_p = P(y=1 | pseudo 1), theta_n = P(y=1 | pseudo 0), delta = theta_p - theta_n.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from refinement.priors import (
    PriorError,
    Priors,
    bootstrap_draws,
    bootstrap_intervals,
    check_priors,
    delta_lower_bound,
    labeled_priors,
    labels_needed,
    oracle_priors,
    point_estimate,
    sample_labeled_indices,
)


def _population(seed: int, n: int, prior: float, r1: float, r0: float):
    """Gold y ~ Bernoulli(prior); pseudo-labels with P(pseudo=1|y=1) = r1 and P(pseudo=1|y=0) = r0.
    Returns gold, pseudo and the generating (pi, theta_p, theta_n, P(pseudo=1))."""
    rng = np.random.default_rng(seed)
    gold = (rng.random(n) < prior).astype(int)
    pseudo = np.where(gold == 1, rng.random(n) < r1, rng.random(n) < r0).astype(int)
    q = prior * r1 + (1 - prior) * r0
    return gold, pseudo, (prior, prior * r1 / q, prior * (1 - r1) / (1 - q), q)


# --------------------------------------------------------------------------------------------------------------
# 1. Hand-made point estimate
# --------------------------------------------------------------------------------------------------------------
def test_point_estimate_hand_made():
    gold = np.array([1, 1, 0, 1, 0, 0, 0, 1, 0, 0])
    pseudo = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1, 0])
    # pi = 4/10; Cp = items 0,1,2,7,8 -> gold 1,1,0,1,0 -> 3/5; Cn = items 3,4,5,6,9 -> gold 1,0,0,0,0 -> 1/5
    pi, theta_p, theta_n = point_estimate(gold, pseudo)
    assert pi == pytest.approx(0.4)
    assert theta_p == pytest.approx(0.6)
    assert theta_n == pytest.approx(0.2)
    # pseudo given as floats or booleans gives the same; the estimates are plain floats
    assert point_estimate(gold.astype(float), pseudo.astype(float)) == pytest.approx((0.4, 0.6, 0.2))
    assert point_estimate(gold, pseudo.astype(bool)) == pytest.approx((0.4, 0.6, 0.2))
    assert all(type(v) is float for v in (pi, theta_p, theta_n))
    oracle = oracle_priors(gold, pseudo)
    assert (oracle.prior, oracle.theta_p, oracle.theta_n) == pytest.approx((0.4, 0.6, 0.2))
    assert oracle.delta == pytest.approx(0.4)
    assert oracle.source == "oracle" and oracle.interval is None
    assert oracle.to_dict()["delta"] == pytest.approx(0.4)


def test_point_estimate_empty_pseudo_set_is_nan():
    gold = np.array([1, 0, 1, 0])
    pi, theta_p, theta_n = point_estimate(gold, np.ones(4, dtype=int))
    assert pi == pytest.approx(0.5) and theta_p == pytest.approx(0.5) and math.isnan(theta_n)
    pi, theta_p, theta_n = point_estimate(gold, np.zeros(4, dtype=int))
    assert math.isnan(theta_p) and theta_n == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------------------
# 2. Oracle and few-labeled priors recover the generating values
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prior,r1,r0,seed", [(0.3, 0.8, 0.2, 0), (0.65, 0.7, 0.4, 1)])
def test_oracle_priors_recover_generating_values(prior, r1, r0, seed):
    n = 200_000
    gold, pseudo, (pi, tp, tn, q) = _population(seed, n, prior, r1, r0)
    est = oracle_priors(gold, pseudo)
    assert abs(est.prior - pi) < 4 * math.sqrt(pi * (1 - pi) / n)
    assert abs(est.theta_p - tp) < 4 * math.sqrt(tp * (1 - tp) / (n * q))
    assert abs(est.theta_n - tn) < 4 * math.sqrt(tn * (1 - tn) / (n * (1 - q)))
    # and it is exactly the point estimate on the whole corpus
    assert (est.prior, est.theta_p, est.theta_n) == point_estimate(gold, pseudo)


@pytest.mark.parametrize("prior,r1,r0,seed", [(0.3, 0.8, 0.2, 0), (0.65, 0.7, 0.4, 1)])
def test_labeled_priors_from_iid_sample_recover_population_values(prior, r1, r0, seed):
    gold, pseudo, _ = _population(seed, 100_000, prior, r1, r0)
    truth = oracle_priors(gold, pseudo)
    q = pseudo.mean()
    n = 2_000
    idx = sample_labeled_indices(len(gold), n, seed=seed + 10)
    est = labeled_priors(gold[idx], pseudo[idx], seed=seed)
    assert est.source == "labeled[2000]"
    # sampling without replacement from a finite corpus: these binomial standard errors are conservative
    assert abs(est.prior - truth.prior) < 4 * math.sqrt(truth.prior * (1 - truth.prior) / n)
    assert abs(est.theta_p - truth.theta_p) < 4 * math.sqrt(truth.theta_p * (1 - truth.theta_p) / (n * q))
    assert abs(est.theta_n - truth.theta_n) < 4 * math.sqrt(truth.theta_n * (1 - truth.theta_n) / (n * (1 - q)))
    assert (est.prior, est.theta_p, est.theta_n) == pytest.approx(point_estimate(gold[idx], pseudo[idx]))

    # bootstrap intervals: present for all four quantities, ordered, covering the point estimate,
    # and of about the width of a 95% normal interval (2 * 1.96 SE)
    assert set(est.interval) == {"prior", "theta_p", "theta_n", "delta"}
    values = {"prior": est.prior, "theta_p": est.theta_p, "theta_n": est.theta_n, "delta": est.delta}
    for key, (low, high) in est.interval.items():
        assert low <= values[key] <= high, key
    se_pi = math.sqrt(est.prior * (1 - est.prior) / n)
    width = est.interval["prior"][1] - est.interval["prior"][0]
    assert 0.7 * 3.92 * se_pi < width < 1.3 * 3.92 * se_pi
    # the interval is seeded
    assert labeled_priors(gold[idx], pseudo[idx], seed=seed).interval == est.interval


def test_labeled_priors_bootstrap_interval_covers_true_delta_in_most_draws():
    gold, pseudo, _ = _population(3, 20_000, 0.4, 0.8, 0.25)
    true_delta = oracle_priors(gold, pseudo).delta
    draws, covered = 50, 0
    for seed in range(draws):
        idx = sample_labeled_indices(len(gold), 50, seed=1000 + seed)
        est = labeled_priors(gold[idx], pseudo[idx], seed=seed)
        low, high = est.interval["delta"]
        assert low <= est.delta <= high
        covered += low <= true_delta <= high
    assert covered >= 0.8 * draws, covered


# --------------------------------------------------------------------------------------------------------------
# 3. The labeled sample is i.i.d. (uniform without replacement), seeded, and bounded
# --------------------------------------------------------------------------------------------------------------
def test_sample_labeled_indices_seeded_unique_in_range():
    a = sample_labeled_indices(1000, 50, seed=7)
    b = sample_labeled_indices(1000, 50, seed=7)
    c = sample_labeled_indices(1000, 50, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 50 and len(np.unique(a)) == 50
    assert a.min() >= 0 and a.max() < 1000
    full = sample_labeled_indices(30, 30, seed=0)
    assert np.array_equal(np.sort(full), np.arange(30))


def test_sample_labeled_indices_is_iid_not_class_balanced():
    n, pi = 10_000, 0.2
    gold = np.zeros(n, dtype=int)
    gold[np.random.default_rng(0).choice(n, int(pi * n), replace=False)] = 1
    reps, size = 400, 50
    means = np.array([gold[sample_labeled_indices(n, size, seed=s)].mean() for s in range(reps)])
    se = math.sqrt(pi * (1 - pi) / (size * reps))
    assert abs(means.mean() - pi) < 4 * se          # ~0.2, far from the 0.5 of a balanced sample
    # per-sample spread is that of a uniform sample (binomial-like), not a fixed balanced count
    expected_sd = math.sqrt(pi * (1 - pi) / size)
    assert 0.7 * expected_sd < means.std() < 1.3 * expected_sd
    # indices are spread uniformly over the corpus (each tenth of the corpus gets ~10%)
    idx = np.concatenate([sample_labeled_indices(n, size, seed=s) for s in range(reps)])
    share = np.bincount(idx * 10 // n, minlength=10) / len(idx)
    assert np.all(np.abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(idx)))


@pytest.mark.parametrize("num_labeled", [0, -1, 101, 1000])
def test_sample_labeled_indices_rejects_bad_sizes(num_labeled):
    with pytest.raises(PriorError):
        sample_labeled_indices(100, num_labeled, seed=0)


# --------------------------------------------------------------------------------------------------------------
# 4. Guards
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theta_p,theta_n,min_delta", [(0.5, 0.5, 0.0), (0.3, 0.6, 0.0), (0.6, 0.5, 0.2),
                                                       (0.7, 0.3, 0.5)])
def test_check_priors_refuses_small_delta(theta_p, theta_n, min_delta):
    with pytest.raises(PriorError, match="delta"):
        check_priors(Priors(0.4, theta_p, theta_n, source="labeled[50]"), min_delta)


def test_check_priors_boundary_and_pass_through():
    ok = Priors(0.4, 0.8, 0.3, source="oracle")
    assert check_priors(ok, 0.1) is ok
    with pytest.raises(PriorError, match="delta"):
        check_priors(ok, ok.delta)                    # delta == min_delta is not "clearly positive"


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")  # bootstrap runs before the guard
@pytest.mark.parametrize("which", ["theta_p", "theta_n"])
def test_check_priors_refuses_empty_pseudo_set(which):
    priors = Priors(0.4, float("nan") if which == "theta_p" else 0.7,
                    float("nan") if which == "theta_n" else 0.2, source="oracle")
    with pytest.raises(PriorError, match="pseudo-set"):
        check_priors(priors, 0.0)
    gold = np.array([1, 0, 1, 0, 1, 0])
    pseudo = np.ones(6, dtype=int) if which == "theta_n" else np.zeros(6, dtype=int)
    with pytest.raises(PriorError, match="pseudo-set"):
        oracle_priors(gold, pseudo)
    with pytest.raises(PriorError, match="pseudo-set"):
        labeled_priors(gold, pseudo, seed=0)


@pytest.mark.parametrize("cls", [0, 1])
def test_labeled_priors_refuses_one_class_sample(cls):
    with pytest.raises(PriorError, match="only gold class"):
        labeled_priors(np.full(50, cls), np.array([0, 1] * 25), seed=0)


def test_labeled_priors_and_oracle_apply_min_delta():
    gold, pseudo, _ = _population(4, 2_000, 0.5, 0.6, 0.5)   # true delta ~0.1
    est = oracle_priors(gold, pseudo)
    assert 0.0 < est.delta < 0.2
    with pytest.raises(PriorError, match="delta"):
        oracle_priors(gold, pseudo, min_delta=0.2)
    with pytest.raises(PriorError, match="delta"):
        labeled_priors(gold, pseudo, seed=0, min_delta=0.2)
    assert labeled_priors(gold, pseudo, seed=0, min_delta=0.0).delta == pytest.approx(est.delta)
    assert issubclass(PriorError, ValueError)


# --------------------------------------------------------------------------------------------------------------
# 5. The interval rule
# --------------------------------------------------------------------------------------------------------------
def test_labels_needed_scales_the_sample_by_the_squared_ratio():
    # estimate 0.2, bound -0.1: distance 0.3; to clear 0.02 the distance must shrink to 0.18: n * (0.3/0.18)^2
    assert labels_needed(50, 0.2, -0.1, 0.02) == 139
    assert labels_needed(50, 0.01, -0.2, 0.02) is None   # no number of labels makes the estimate clear min_delta


def test_delta_lower_bound_is_the_bootstrap_percentile_and_tightens_with_confidence():
    gold, pseudo, _ = _population(0, 100, 0.5, 0.7, 0.4)
    draws = bootstrap_draws(gold, pseudo, seed=3)["delta"]
    assert delta_lower_bound(gold, pseudo, 3, 0.8) == pytest.approx(np.percentile(draws, 20))
    bounds = [delta_lower_bound(gold, pseudo, 3, c) for c in (0.6, 0.8, 0.95)]
    assert bounds[0] > bounds[1] > bounds[2]
    assert bootstrap_intervals(gold, pseudo, 3)["delta"][0] == pytest.approx(np.percentile(draws, 2.5))


def test_the_interval_rule_refuses_a_point_estimate_its_bound_does_not_support():
    gold, pseudo, _ = _population(1, 50, 0.5, 0.6, 0.45)
    priors = labeled_priors(gold, pseudo, seed=0, min_delta=None)
    assert priors.delta_lower < priors.delta and priors.num_labeled == 50 and priors.confidence == 0.8
    between = (priors.delta_lower + priors.delta) / 2
    assert check_priors(priors, between, "point") is priors
    with pytest.raises(PriorError, match=r"80% lower confidence bound -?\d\.\d{3} .* about \d+ labeled items"):
        check_priors(priors, between, "interval")
    with pytest.raises(PriorError, match="lower confidence bound"):
        labeled_priors(gold, pseudo, seed=0, min_delta=between, rule="interval")
    # oracle priors have no bound: the interval rule falls back to the point estimate
    oracle = oracle_priors(gold, pseudo, min_delta=None)
    assert check_priors(oracle, between, "interval") is oracle
