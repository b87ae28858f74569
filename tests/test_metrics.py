"""Label-quality helpers, the prior-matching threshold, and the threshold a run ships with its model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from refinement.metrics import estimated_accuracy, label_quality, prior_matching_threshold
from refinement.priors import point_estimate


def test_estimated_accuracy_with_exact_priors_is_the_accuracy():
    rng = np.random.default_rng(0)
    gold = (rng.random(5000) < 0.4).astype(int)
    pseudo = np.where(rng.random(5000) < 0.3, 1 - gold, gold)
    _, theta_p, theta_n = point_estimate(gold, pseudo)
    assert estimated_accuracy(pseudo.mean(), theta_p, theta_n) == pytest.approx(np.mean(gold == pseudo))


def test_label_quality_matches_hand_counts():
    gold = np.array([1, 1, 0, 0, 1])
    predicted = np.array([1, 0, 0, 1, 1])
    quality = label_quality(gold, predicted, scores=np.array([0.9, 0.2, 0.1, 0.6, 0.8]))
    assert quality["accuracy"] == pytest.approx(3 / 5)
    assert quality["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert quality["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (harmless, harmful) pairs are ordered right


@pytest.mark.parametrize("prior", [0.1, 0.43, 0.8])
def test_prior_matching_threshold_labels_a_share_prior_positive(prior):
    logits = np.random.default_rng(1).normal(3.0, 2.0, 10_001)  # zero is far from the right threshold
    threshold = prior_matching_threshold(logits, prior)
    assert np.mean(logits > threshold) == pytest.approx(prior, abs=1e-3)
    with pytest.raises(ValueError):
        prior_matching_threshold(logits, 1.0)


def test_a_run_with_prior_threshold_relabels_a_share_pi_and_ships_its_threshold(tmp_path, noisy_data, make_config):
    from refinement.loop import run_refinement

    out = tmp_path / "out"
    summary = run_refinement(make_config(noisy_data, out, num_rounds=1, num_labeled=0, relabel_threshold="prior",
                                         round_selection="last", relabel_anchor_weight=0.0, relabel_ensemble=False))
    trained = summary["rounds"][1]
    assert trained["positive_rate"] == pytest.approx(trained["priors"]["prior"], abs=0.01)
    relabels = [json.loads(line) for line in (out / "round_01" / "relabels.jsonl").read_text().splitlines()]
    assert all(r["pseudo_label"] == int(r["logit"] > trained["threshold"]) for r in relabels)
    shipped = json.loads((out / "model" / "config.json").read_text())
    assert shipped["decision_threshold"] == trained["threshold"] != 0.0
    assert shipped["refinement_round"] == 1
