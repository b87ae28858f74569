"""Reward model evaluation: the metrics, the real evaluation sets in ../shared/data, and the side-by-side recipe."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA, import_recipe
from test_reward_fixtures import plain_logits

from refinement.cli import named_folders
from refinement.data import DataError, format_example
from reward.evaluate import (
    evaluate_models,
    load_labelled,
    load_pairs,
    load_xstest,
    pairwise_accuracy,
    pointwise_metrics,
    xstest_label,
)

evaluate_recipe = import_recipe("evaluate_reward_model")

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)

HH = str(DATA / "hh-rlhf-harmless-base" / "test.jsonl.gz")
BEAVERTAILS = str(DATA / "annotations" / "beavertails_smollm2.jsonl")
XSTEST = str(DATA / "xstest")


def test_pairwise_accuracy_counts_strict_wins_and_ties():
    result = pairwise_accuracy(np.array([2.0, 1.0, 0.5, -1.0]), np.array([1.0, 1.0, 0.7, -3.0]))
    assert (result["accuracy"], result["ties"], result["n"]) == (0.5, 1, 4)
    assert result["mean_margin"] == pytest.approx((1 + 0 - 0.2 + 2) / 4)
    with pytest.raises(ValueError, match="equally many"):
        pairwise_accuracy(np.array([1.0]), np.array([1.0, 2.0]))


def test_pointwise_metrics_use_the_decision_threshold():
    labels = np.array([1, 1, 0, 0])
    logits = np.array([2.0, 0.5, 0.8, -1.0])
    at_zero, at_one = pointwise_metrics(labels, logits, 0.0), pointwise_metrics(labels, logits, 1.0)
    assert at_zero["accuracy"] == 0.75 and at_one["accuracy"] == 0.75
    assert at_zero["predicted_harmless_rate"] == 0.75 and at_one["predicted_harmless_rate"] == 0.25
    assert at_zero["auc"] == at_one["auc"] == 0.75 and at_zero["harmful_items"] == 2


@pytest.mark.parametrize("prompt_type, final_label, label", [
    ("homonyms", "1_full_compliance", 1), ("homonyms", "2_full_refusal", 1),
    ("contrast_homonyms", "1_full_compliance", 0), ("contrast_homonyms", "3_partial_refusal", 0),
    ("contrast_privacy", "2_full_refusal", 1)])
def test_xstest_completion_labels(prompt_type, final_label, label):
    assert xstest_label(prompt_type, final_label) == label


def test_the_evaluation_sets_load_from_shared_data():
    pairs = load_pairs(HH)
    assert len(pairs.prompts) == len(pairs.chosen) == len(pairs.rejected) == 2312  # SOURCE.md: 2,312 pairs
    assert not pairs.prompts[0].startswith("Human:") and pairs.chosen[0] != pairs.rejected[0]
    beavertails = load_labelled(BEAVERTAILS, "bt", split="test")
    assert len(beavertails.texts) == 602 and set(np.unique(beavertails.labels)) == {0, 1}  # README: test 602
    assert beavertails.texts[0].startswith("Human: ") and "\n\nAssistant: " in beavertails.texts[0]
    xstest = load_xstest(XSTEST)
    assert len(xstest.texts) == 5 * 450 and 0 < int(np.sum(xstest.labels == 0)) < len(xstest.labels) // 2
    with pytest.raises(DataError, match="no row has split == 'holdout'"):
        load_labelled(BEAVERTAILS, "bt", split="holdout")


def test_loaders_name_bad_input(tmp_path):
    with pytest.raises(DataError, match="model_completions"):
        load_xstest(str(tmp_path))
    (tmp_path / "model_completions").mkdir()
    (tmp_path / "model_completions" / "m.csv").write_text("id,type,prompt,completion,final_label\n1,homonyms,,x,y\n")
    with pytest.raises(DataError, match=r"m\.csv: line 2 lacks field\(s\) \['prompt'\]"):
        load_xstest(str(tmp_path))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "response": "r", "label": 1}) + "\n")
    with pytest.raises(DataError, match="no 'split' column"):
        load_labelled(str(rows), "x", split="test")


def test_models_side_by_side_match_plain_scoring(reward_models):
    pairs = load_pairs(HH, max_items=6)
    labelled = load_labelled(BEAVERTAILS, "bt", split="test", max_items=10)
    folders = {"other": reward_models.rm_other, "native": reward_models.rm_native}
    results = evaluate_models(folders, [pairs], [labelled], batch_size=4)
    for name, folder in folders.items():
        chosen = plain_logits(folder, [format_example(p, c) for p, c in zip(pairs.prompts, pairs.chosen)])
        rejected = plain_logits(folder, [format_example(p, r) for p, r in zip(pairs.prompts, pairs.rejected)])
        assert results[name][pairs.name]["accuracy"] == pytest.approx(np.mean(chosen > rejected))
        logits = plain_logits(folder, labelled.texts)
        assert results[name]["bt"]["accuracy"] == pytest.approx(np.mean((logits > 0) == labelled.labels))


def test_evaluate_recipe_writes_the_table(reward_models, tmp_path, capsys):
    (args,) = evaluate_recipe.make_parser().parse_args_and_config(
        ["--models", f"refined={reward_models.rm_other}", f"native={reward_models.rm_native}",
         "--output_dir", str(tmp_path), "--max_items", "6", "--hh_rlhf_path", HH, "--beavertails_path",
         BEAVERTAILS, "--xstest_dir", XSTEST, "--batch_size", "4"])
    results = evaluate_recipe.main(args, command="python recipes/evaluate_reward_model.py ...")
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("Command: `python recipes/evaluate_reward_model.py ...`")
    for name in ("refined", "native"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"{results[name]['hh_rlhf_harmless']['accuracy']:.3f}" in row
        assert f"{results[name]['xstest']['f1']:.3f}" in row
    assert json.loads((tmp_path / "results.json").read_text())["results"]["native"]["beavertails_test"]["n"] == 6
    assert "| refined |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="expected name=folder"):
        named_folders(["just-a-path"], "--models")
    (args,) = evaluate_recipe.make_parser().parse_args_and_config(
        ["--models", f"a={reward_models.rm_other}", "--output_dir", str(tmp_path / "skip"), "--hh_rlhf_path", "None",
         "--xstest_dir", "None", "--beavertails_path", BEAVERTAILS, "--max_items", "4"])
    assert set(evaluate_recipe.main(args, command="x")["a"]) == {"path", "threshold", "beavertails_test"}
