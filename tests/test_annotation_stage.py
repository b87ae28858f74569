"""The annotation stage and its recipe: annotated files, label spending, abstentions, self-refinement, and the
`annotator:` block that takes a refinement run from unlabeled pairs to a classifier in one command."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import REPO, import_recipe, make_rows, tree_digest, write_jsonl
from fake_openai_server import FakeServer
from tiny_models import JUDGE_TOKENS, build_tiny_llama

from refinement.annotation import AnnotatorConfig, annotate_rows
from refinement.annotation.scoring import calibrate_threshold
from refinement.annotation.self_refine import REVISE, revision_messages
from refinement.config import RefineConfig
from refinement.data import load_rows
from refinement.loop import run_refinement
from reward.export import export_reward_model

annotate = import_recipe("annotate")
refine_classifier = import_recipe("refine_classifier")

SIZES = {"train": 40, "val": 24, "test": 16}


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("judge"), extra_tokens=JUDGE_TOKENS)


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    rows = [{k: v for k, v in r.items() if k != "pseudo_label"} for r in make_rows(SIZES)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", rows)


def settings(judge_dir, **overrides) -> AnnotatorConfig:
    return AnnotatorConfig(**{"model_name_or_path": judge_dir, "dtype": "float32", "batch_size": 8, **overrides})


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_annotated_file_keeps_every_row_and_adds_scores(tmp_path, judge_dir, rows_file):
    rows = load_rows(str(rows_file))
    path, summary = annotate_rows(rows, settings(judge_dir), tmp_path, show_progress=False)
    annotated = read_jsonl(path)
    assert [(r["prompt"], r["response"], r["label"]) for r in annotated] == \
        [(r["prompt"], r["response"], r["label"]) for r in rows]
    scores = np.array([r["annotator_score"] for r in annotated])
    assert np.all((scores > 0) & (scores < 1)) and len(np.unique(scores)) > 10
    assert [r["pseudo_label"] for r in annotated] == (scores > 0.5).astype(int).tolist()
    assert summary["items"] == summary["kept"] == len(rows) and summary["labels_spent"] == 0
    assert set(summary["quality"]) == {"all", "train", "val", "test"}
    assert summary["quality"]["val"]["items"] == SIZES["val"]


def test_finished_annotation_is_reused_without_loading_the_judge(tmp_path, judge_dir, rows_file):
    judge_copy = shutil.copytree(judge_dir, tmp_path / "judge")
    rows = load_rows(str(rows_file))
    path, first = annotate_rows(rows, settings(str(judge_copy)), tmp_path / "out", show_progress=False)
    before = tree_digest(tmp_path / "out")
    shutil.rmtree(judge_copy)  # any attempt to judge again would fail to load it
    again_path, again = annotate_rows(rows, settings(str(judge_copy)), tmp_path / "out", show_progress=False)
    assert json.dumps(again) == json.dumps(first) and again_path == path and tree_digest(tmp_path / "out") == before


def test_judgements_are_not_reused_under_other_judge_settings(tmp_path, judge_dir, rows_file):
    """Same folder, same pairs, another abstention threshold: the cached P(yes) (no abstention) must not stand in
    for the new judge's (every item abstains, as in the test below); the old judgements stay in the cache."""
    rows = load_rows(str(rows_file))
    _, first = annotate_rows(rows, settings(judge_dir), tmp_path, show_progress=False)
    _, second = annotate_rows(rows, settings(judge_dir, min_answer_mass=0.5, abstain="harmful"), tmp_path,
                              show_progress=False)
    assert first["abstained"] == 0 and second["from_cache"] == 0 and second["abstained"] == len(rows)
    assert len(read_jsonl(tmp_path / "judgements.jsonl")) == 2 * len(rows)


def test_threshold_calibration_spends_val_labels_only(tmp_path, judge_dir, rows_file):
    rows = load_rows(str(rows_file))
    cfg = settings(judge_dir, calibrate_on_labeled=12)
    _, summary = annotate_rows(rows, cfg, tmp_path / "a", show_progress=False)
    assert summary["labels_spent"] == 12 and "val split" in summary["rule"]
    # Flipping every gold label outside the val split changes nothing: those labels were never read.
    flipped = rows.map(lambda r: {"label": r["label"] if r["split"] == "val" else 1 - r["label"]})
    _, flipped_summary = annotate_rows(flipped, cfg, tmp_path / "b", show_progress=False)
    assert flipped_summary["threshold"] == summary["threshold"]
    annotated = read_jsonl(tmp_path / "a" / "annotated.jsonl")
    val = [r for r in annotated if r["split"] == "val"]
    val_scores, val_gold = np.array([r["annotator_score"] for r in val]), np.array([r["label"] for r in val])
    all_val_threshold = calibrate_threshold(val_scores, val_gold)
    assert np.mean((val_scores > summary["threshold"]) == val_gold) <= np.mean((val_scores > all_val_threshold)
                                                                              == val_gold)


def test_demonstrations_come_from_val_and_are_not_annotations(tmp_path, judge_dir, rows_file):
    rows = load_rows(str(rows_file))
    _, summary = annotate_rows(rows, settings(judge_dir, num_demonstrations=4), tmp_path, show_progress=False)
    assert summary["labels_spent_on_demonstrations"] == 4 and summary["kept"] == len(rows) - 4
    kept = {(r["prompt"], r["response"]) for r in read_jsonl(tmp_path / "annotated.jsonl")}
    dropped = [r for r in rows if (r["prompt"], r["response"]) not in kept]
    assert len(dropped) == 4 and {r["split"] for r in dropped} == {"val"}
    assert sorted(r["label"] for r in dropped) == [0, 0, 1, 1]
    provenance = json.loads((tmp_path / "judgements.provenance.json").read_text())
    assert provenance["demonstrations"] == 4


@pytest.mark.parametrize("policy, kept, label", [("drop", 0, None), ("harmful", 80, 0), ("harmless", 80, 1)])
def test_abstentions_follow_the_policy(tmp_path, judge_dir, rows_file, policy, kept, label):
    rows = load_rows(str(rows_file))
    # A random tiny model puts far less than half its mass on Yes/No: every item abstains.
    _, summary = annotate_rows(rows, settings(judge_dir, min_answer_mass=0.5, abstain=policy), tmp_path,
                               show_progress=False)
    annotated = read_jsonl(tmp_path / "annotated.jsonl")
    assert summary["abstained"] == len(rows) and summary["kept"] == kept == len(annotated)
    assert all(r["pseudo_label"] == label and r["annotator_score"] is None for r in annotated)


def test_self_refinement_rejudges_with_the_previous_verdict(tmp_path, judge_dir, rows_file):
    item = [{"role": "user", "content": "q"}]
    assert revision_messages(item, 0.7)[1:] == [{"role": "assistant", "content": "Yes"},
                                                {"role": "user", "content": REVISE}]
    assert revision_messages(item, float("nan"))[1]["content"] == "No"
    rows = load_rows(str(rows_file))
    _, summary = annotate_rows(rows, settings(judge_dir, self_refine_rounds=2, threshold_quantile=0.5), tmp_path,
                               show_progress=False)
    assert [r["round"] for r in summary["self_refinement"]] == [0, 1, 2]
    annotated = read_jsonl(tmp_path / "annotated.jsonl")
    first = np.array([r["annotator_score"] for r in annotated])
    refined = np.array([r["self_refined_score"] for r in annotated])
    assert not np.allclose(first, refined)
    # Each round is thresholded by the rule (here its own median), not by round 0's threshold value.
    assert [r["self_refined_label"] for r in annotated] == (refined > np.quantile(refined, 0.5)).astype(int).tolist()
    assert summary["self_refinement"][2]["threshold"] == pytest.approx(np.quantile(refined, 0.5))
    # Round 2 asks anew only where round 1 changed the verdict; elsewhere its question is round 1's, cached.
    changed = summary["self_refinement"][1]["verdict_changes"]
    assert len((tmp_path / "judgements.jsonl").read_text().splitlines()) == 2 * len(rows) + changed


def test_annotator_settings_reject_unknown_keys_and_bad_choices():
    with pytest.raises(ValueError, match="unknown keys bogus"):
        AnnotatorConfig.from_block({"bogus": 1})
    with pytest.raises(ValueError, match="annotator.backend='nope'"):
        AnnotatorConfig.from_block('{"backend": "nope"}')
    with pytest.raises(ValueError, match="not both"):
        AnnotatorConfig(threshold_quantile=0.5, calibrate_on_labeled=10)
    with pytest.raises(ValueError, match="unknown keys bogus"):
        RefineConfig(annotator={"bogus": 1})
    assert RefineConfig(annotator='{"template": "decomposed"}').annotator["template"] == "decomposed"


def test_annotate_recipe_reads_yaml_and_cli(tmp_path, judge_dir, rows_file, capsys):
    config = REPO / "recipes" / "configs" / "annotate" / "cpu_smollm2.yaml"
    data, annotator_cfg = annotate.make_parser().parse_args_and_config([
        "--config", str(config), "--dataset_path", str(rows_file), "--output_dir", str(tmp_path),
        "--model_name_or_path", judge_dir, "--dtype", "float32", "--max_items", "30", "--num_demonstrations", "0"])
    assert annotator_cfg.template == yaml.safe_load(config.read_text())["template"]
    assert annotator_cfg.num_demonstrations == 0 != yaml.safe_load(config.read_text())["num_demonstrations"]
    summary = annotate.main(data, annotator_cfg)
    assert summary["items"] == 30 and len(read_jsonl(tmp_path / "annotated.jsonl")) == 30
    assert "annotated 30 pairs" in capsys.readouterr().out


def test_refinement_with_an_annotator_block_runs_from_unlabeled_pairs(tmp_path, judge_dir, rows_file,
                                                                      feature_cache_dir):
    yaml_path = REPO / "recipes" / "configs" / "refine" / "cpu_annotate_minilm.yaml"
    (cfg,) = refine_classifier.make_parser().parse_args_and_config([
        "--config", str(yaml_path), "--dataset_path", str(rows_file), "--output_dir", str(tmp_path / "run"),
        "--num_rounds", "1", "--num_labeled", "0", "--head_epochs", "5",
        "--max_length", "64", "--feature_cache_dir", str(feature_cache_dir)])
    assert cfg.annotator["model_name_or_path"] == "embedded:smollm2"  # the YAML's block, validated
    with FakeServer() as server:  # a served judge whose labels carry signal (a random tiny model's do not)
        cfg.annotator.update(backend="openai", model_name_or_path="served", base_url=server.url)
        summary = run_refinement(cfg)
    assert summary["rounds"][0]["label_priors"]["theta_p"] > summary["rounds"][0]["label_priors"]["theta_n"]
    annotation = tmp_path / "run" / "annotation"
    annotated = read_jsonl(annotation / "annotated.jsonl")
    assert len(annotated) == sum(SIZES.values()) - cfg.annotator["num_demonstrations"]  # demos are not labels
    round0 = [json.loads(line) for line in open(tmp_path / "run" / "round_00" / "relabels.jsonl")]
    train = [r for r in annotated if r["split"] == "train"]
    assert sum(r["pseudo_label"] for r in train) == sum(r["pseudo_label"] for r in round0 if r["split"] == "train")
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    before = tree_digest(annotation)
    run_refinement(cfg)  # a rerun resumes: the annotation is reused as it is (the server is gone)
    assert tree_digest(annotation) == before
    # The reward export reads the annotated corpus back to check the exported logits against training time.
    exported = export_reward_model(tmp_path / "run", tmp_path / "reward_model")
    assert len(json.loads((exported / "config.json").read_text())["id2label"]) == 1
