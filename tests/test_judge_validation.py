"""bench/judge_validation.py's math by hand (AUC and kappa intervals, a judge's quality on labelled replies, the
cross-fitted ceiling heads), the committed gold labels of generated replies, and the probe's rescore-only path."""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from conftest import REPO

from alignment.best_of_n import load_or_sample
from alignment.evaluate import SamplingConfig
from alignment.intervals import auc_interval, kappa_interval
from alignment.prompts import Prompt

spec = importlib.util.spec_from_file_location("bench_judge_validation", REPO / "bench" / "judge_validation.py")
validation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validation)

Z = 1.959963984540054


def test_auc_interval_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: AUC 0.75; Q1 = 0.75/1.25 = 0.6, Q2 = 2*0.5625/1.75
    estimate = auc_interval([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0])
    variance = (0.75 * 0.25 + (0.6 - 0.5625) + (2 * 0.5625 / 1.75 - 0.5625)) / 4
    assert estimate.value == pytest.approx(0.75)
    assert estimate.low == pytest.approx(0.75 - Z * math.sqrt(variance)) and estimate.high == 1.0
    wide, narrow = (auc_interval(np.r_[s, s - 1], np.r_[[1] * n, [0] * n])
                    for n, s in ((5, np.linspace(0, 1, 5)), (50, np.linspace(0, 1, 50))))
    assert narrow.high - narrow.low < wide.high - wide.low  # more replies, a narrower interval
    with pytest.raises(ValueError, match="both classes"):
        auc_interval([0.1, 0.2], [1, 1])


def test_kappa_interval_by_hand():
    # agreement 0.75, chance 0.5*0.25 + 0.5*0.75 = 0.5: kappa 0.5, half-width z*sqrt(0.75*0.25/4)/0.5
    estimate = kappa_interval([1, 1, 0, 0], [1, 0, 0, 0])
    half = Z * math.sqrt(0.75 * 0.25 / 4) / 0.5
    assert estimate.value == pytest.approx(0.5)
    assert estimate.low == pytest.approx(0.5 - half) and estimate.high == 1.0


def test_judge_quality_splits_replies_by_prompt():
    labels = [0, 1, 1, 1, 1, 1]
    harmful = [True, True, True, False, False, False]
    scores = [-1.0, 2.0, -0.5, 1.0, 3.0, -2.0]  # threshold 0: verdicts 0 1 0 | 1 1 0
    quality = validation.judge_quality(labels, scores, 0.0, harmful)
    assert quality["accuracy"].value == pytest.approx(4 / 6)
    assert quality["harmless_benign_prompts"].value == pytest.approx(2 / 3)
    assert quality["harmless_harmful_prompts"].value == pytest.approx(1 / 3)
    assert quality["auc_harmful_prompts"].value == pytest.approx(1.0)  # -1 below both 2 and -0.5
    assert quality["auc"].value == pytest.approx(4 / 5)  # -1 is above only -2 among the five positives
    assert quality["kappa"].value == pytest.approx((4 / 6 - (3 / 6 * 5 / 6 + 3 / 6 * 1 / 6)) /
                                                   (1 - (3 / 6 * 5 / 6 + 3 / 6 * 1 / 6)))


def test_labelled_best_of_by_hand():
    # three prompts, two labelled replies each; the score ranks the harmless reply first for prompts 7 and 9
    prompt_ids = [7, 7, 8, 8, 9, 9]
    labels = [0, 1, 0, 0, 1, 0]
    scores = [0.1, 0.8, 0.5, 0.2, 0.9, 0.3]
    result = validation.labelled_best_of(prompt_ids, labels, scores)
    assert result["best"].value == pytest.approx(2 / 3)
    assert result["oracle"].value == pytest.approx(2 / 3)  # prompt 8 has no harmless reply
    assert result["best_vs_random"].value == pytest.approx(2 / 3 - result["random"].value)
    inverted = validation.labelled_best_of(prompt_ids, labels, [-s for s in scores])
    assert inverted["best"].value == 0.0
    with pytest.raises(ValueError, match="same number of labelled replies"):
        validation.labelled_best_of([1, 1, 2], [0, 1, 1], [0.1, 0.2, 0.3])


def test_cross_fitting_scores_each_group_with_a_head_that_never_saw_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    groups = np.repeat(["a", "b", "c", "d"], 30)
    labels = (x[:, 0] > 0).astype(int)
    labels[groups == "c"] = 1 - labels[groups == "c"]  # group c follows the opposite rule
    scores = validation.cross_fitted_scores(x, labels, groups, c=1.0)
    c = groups == "c"
    # every head that scores c learned "x0 > 0 is positive" from a, b and d, so c is ranked backwards
    assert auc_interval(scores[c], labels[c]).value < 0.1
    assert auc_interval(scores[~c], labels[~c]).value > 0.9
    # random labels on many features: an in-sample fit memorises them (AUC ~1), a cross-fitted one cannot
    noise_x, noise_labels = rng.normal(size=(60, 200)), rng.integers(0, 2, size=60)
    noise_scores = validation.cross_fitted_scores(noise_x, noise_labels, np.repeat(["a", "b", "c"], 20), c=1.0)
    assert auc_interval(noise_scores, noise_labels).value < 0.75


def test_committed_gold_labels_are_complete_and_stratified():
    items = validation.read_labels()
    harmful = [item for item in items if item["prompt_is_harmful"]]
    assert len(harmful) >= 120 and len(items) - len(harmful) >= 120
    per_prompt = {}
    for item in harmful:
        per_prompt[item["prompt_id"]] = per_prompt.get(item["prompt_id"], 0) + 1
    assert len(set(per_prompt.values())) == 1  # the labelled best-of needs as many replies for every prompt
    split_of = {}
    for item in items:  # a judge trained on the train split never saw a test category
        assert split_of.setdefault(item["category"], item["judge_split"]) == item["judge_split"], item["category"]
    for harmful in (True, False):
        assert {s for c, s in split_of.items() if any(i["category"] == c and i["prompt_is_harmful"] == harmful
                                                          for i in items)} == {"train", "val", "test"}
    assert all(isinstance(item["incoherent"], bool) for item in items)
    assert {item["label"] for item in items if item["prompt_is_harmful"]} == {0, 1}
    keys = {(item["prompt_id"], item["reply_index"]) for item in items}
    assert len(keys) == len(items)  # no reply labelled twice


def test_read_labels_names_the_bad_row(tmp_path):
    path = tmp_path / "labels.jsonl"
    row = {"prompt_id": 0, "prompt": "p", "reply": "r", "label": 1, "prompt_is_harmful": True, "category": "fraud"}
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "label": None}) + "\n")
    with pytest.raises(ValueError, match="row 2 has no 'label'"):
        validation.read_labels(path)
    path.write_text(json.dumps({**row, "label": 2}) + "\n")
    with pytest.raises(ValueError, match="row 1: 'label' must be 0 or 1"):
        validation.read_labels(path)


def test_rescore_never_samples(tmp_path):
    prompts = [Prompt("p", True, "t")]
    sampling = SamplingConfig(do_sample=True, max_new_tokens=4)
    with pytest.raises(ValueError, match="nothing to rescore"):
        load_or_sample(tmp_path, "no-such-policy", prompts, 2, sampling, rescore=True)
