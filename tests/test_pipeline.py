"""recipes/pipeline.py end to end on tiny models, from its shipped YAML: annotate -> refine -> export -> judge ->
evaluate -> PPO -> evaluate -> report; then reruns that skip finished stages and redo only changed ones.

Annotator, policy and classifier backbone are tiny Llamas (tests/tiny_models.py); the data is a subset of the
demo corpus. PPO makes 2 updates of 4 episodes; each evaluation generates 6 tokens for 2 + 2 prompts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, import_recipe, tree_digest, write_jsonl
from tiny_models import JUDGE_TOKENS, build_tiny_llama

from alignment.best_of_n import arm_table
from alignment.demo import demo_path
from alignment.evaluate import paired_table
from alignment.stages import labels_table, selected_quality

pipeline = import_recipe("pipeline")

SUBSET = {"train": (40, 20), "val": (6, 6), "test": (8, 8)}  # split: (harmless, harmful) pairs
STAGE_DIRS = ("refine", "reward_model", "reward_refined", "refine_vanilla", "reward_vanilla", "judge", "best_of_n",
              "ppo", "eval/before", "eval/after")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, feature_cache_dir):
    base = tmp_path_factory.mktemp("pipeline")
    rows = [json.loads(line) for line in open(demo_path("pairs"))]
    subset = []
    for split, (harmless, harmful) in SUBSET.items():
        for label, count in ((1, harmless), (0, harmful)):
            subset += [r for r in rows if r["split"] == split and r["label"] == label][:count]
    data = str(write_jsonl(base / "pairs.jsonl", subset))
    policy = build_tiny_llama(base / "policy")
    # Random weights, yet its scores follow surface features of these pairs, enough signal for robust UU to train
    # round 1 (theta_p - theta_n > min_delta); the last trained round ships, whether or not it beats round 0, since
    # this test is about the stages, not about a tiny random judge's label quality.
    annotator = build_tiny_llama(base / "annotator", extra_tokens=JUDGE_TOKENS)
    classifier = {"dataset_path": data, "model_name_or_path": policy, "max_length": 64, "head_epochs": 5,
                  "feature_cache_dir": str(feature_cache_dir)}
    overrides = {
        "refine_overrides": {**classifier, "num_labeled": 30, "round_selection": "last", "annotator": {
            "model_name_or_path": annotator, "dtype": "float32", "batch_size": 8, "num_demonstrations": 4,
            "max_prompt_tokens": 16, "max_response_tokens": 32, "threshold_quantile": 0.5}},
        "judge_overrides": {**{k: v for k, v in classifier.items() if k != "dataset_path"}, "feature_layer": None},
        "ppo_overrides": {"max_prompts": 8, "per_device_train_batch_size": 4, "total_episodes": 8,
                          "local_rollout_forward_batch_size": 4, "response_length": 8, "learning_rate": 1e-3,
                          "lora_target_modules": ["q_proj", "v_proj"], "lora_r": 4, "lora_alpha": 8,
                          "disable_tqdm": True},
    }
    argv = ["--config", str(REPO / "recipes" / "configs" / "pipeline" / "cpu_smollm2.yaml"),
            "--output_dir", str(base / "run"), "--policy", policy, "--eval_num_prompts", "2",
            "--eval_max_new_tokens", "6", "--probe_max_new_tokens", "6", "--probe_num_prompts", "2",
            *[x for k, v in overrides.items() for x in (f"--{k}", json.dumps(v))]]
    return {"out": base / "run", "argv": argv, "policy": policy, "annotator": annotator}


def parse(argv: list[str]):
    (config,) = pipeline.make_parser().parse_args_and_config(argv)
    return config


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def digests(out: Path) -> dict:
    return {name: tree_digest(out / name) for name in STAGE_DIRS}


def test_pipeline_runs_every_stage_then_resumes_without_redoing_them(setup, capsys):
    out = setup["out"]
    summary = pipeline.main(parse(setup["argv"]))
    printed = capsys.readouterr().out

    # annotate + refine: the tiny annotator judged the pairs (4 val demonstrations), robust UU refined its labels
    annotation = read(out / "refine" / "annotation" / "annotation_summary.json")
    assert annotation["annotator"]["model_name_or_path"] == setup["annotator"]
    assert annotation["labels_spent_on_demonstrations"] == 4
    assert annotation["kept"] == sum(map(sum, SUBSET.values())) - 4  # demonstrations are not annotations
    refine = read(out / "refine" / "summary.json")
    assert refine["config"]["loss"] == "robust_uu" and refine["labeled_items"] == 30 and refine["selected_round"] >= 1
    # export: the shipped round as a reward model folder, checked on reload
    reward = read(out / "reward_model" / "config.json")
    assert reward["refinement_round"] == refine["selected_round"] and reward["license"] == "apache-2.0"
    assert summary["reward_model"]["accuracy"] == refine["shipped_metrics"]["quality"]["test"]["accuracy"]
    assert reward["export_check"]["max_abs_logit_diff"] <= reward["export_check"]["tolerance"]
    # judge: gold-supervised (its round-0 labels are the gold labels themselves)
    judge = read(out / "judge" / "summary.json")
    assert judge["config"]["pseudo_label_column"] == judge["config"]["label_column"] == "label"
    assert judge["rounds"][0]["quality"]["test"]["accuracy"] == 1.0 and judge["config"]["loss"] == "pn"
    # PPO against the exported reward, then both evaluations on held-out prompts with judge, reward and KL
    ppo = read(out / "ppo" / "summary.json")
    assert ppo["steps"] == 2 and ppo["reward_model"] == str(out / "reward_model") and (out / "ppo" / "adapter").is_dir()
    before, after = (read(out / "eval" / name / "metrics.json") for name in ("before", "after"))
    assert before["policy"] == setup["policy"] and after["policy"] == str(out / "ppo" / "model")
    for metrics in (before, after):
        assert metrics["judge"] == str(out / "judge" / "model") and metrics["reward_model"] == str(out / "reward_model")
        assert metrics["harmful"]["n"] == metrics["benign"]["n"] == 2 and metrics["sampling"]["max_new_tokens"] == 6
        assert metrics["harmful"]["harmless_rate"] is not None and metrics["overall"]["mean_reward"] is not None
        assert all(p.startswith("demo_") for p in metrics["by_source"])
    assert before["overall"]["mean_kl"] == pytest.approx(0.0, abs=1e-9)  # the starting policy against itself
    assert after["overall"]["mean_kl"] != 0.0  # the trained adapter moved the policy
    # the summary: the before/after table printed and in the report, the metrics as the evaluations wrote them
    assert summary["before"]["overall"] == before["overall"] and summary["after"]["harmful"] == after["harmful"]
    table = (out / "comparison" / "comparison.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| metric"))
    assert header == "| metric | before | after |" and header in printed and header in (out / "report.md").read_text()
    assert (out / "comparison" / "comparison.png").stat().st_size > 0
    # each change with its paired interval, computed from the two evaluations' per-prompt verdicts
    changes, rates = paired_table(out / "eval" / "before", out / "eval" / "after")
    assert changes in printed and changes in (out / "report.md").read_text() and rates
    # vanilla RLAIF beside it: PN, one round, on the refine stage's annotation (not judged again)
    vanilla = read(out / "refine_vanilla" / "summary.json")
    assert vanilla["config"]["loss"] == "pn" and vanilla["config"]["num_rounds"] == 1
    assert (out / "refine_vanilla" / "annotation" / "annotated.jsonl").read_bytes() == \
        (out / "refine" / "annotation" / "annotated.jsonl").read_bytes()
    assert read(out / "reward_vanilla" / "config.json")["refinement_run"]["loss"] == "pn"
    # best-of-n: the starting policy's replies to the evaluation prompts, picked by each reward; its table printed
    probe = read(out / "best_of_n" / "probe.json")
    assert probe["models"] == {"refined": str(out / "reward_refined"), "vanilla": str(out / "reward_vanilla"),
                               "judge": str(out / "judge" / "model")}
    assert read(out / "reward_refined" / "config.json")["refinement_round"] >= 1
    assert probe["sampled"]["n"] == 4 and probe["n_harmful"] == probe["n_benign"] == 2
    assert list(probe["outcomes"]) == ["random", "refined", "vanilla", "judge"]
    probe_table = arm_table(probe["outcomes"])
    assert probe_table in printed and probe_table in (out / "report.md").read_text()
    # the labels: every round's classifier beside the annotator's labels, vanilla and the shipped one, printed
    labels = labels_table(refine, vanilla)
    assert labels in printed and labels in (out / "report.md").read_text()
    assert len(labels.splitlines()) == 2 + len(refine["rounds"]) + 2
    assert summary["best_of_n"]["outcomes"]["refined"]["4"]["harmless_harmful"] == \
        probe["outcomes"]["refined"]["4"]["harmless_harmful"]
    stages = read(out / "stages.json")
    assert list(stages) == ["refine", "export", "export_refined", "vanilla", "export_vanilla", "judge", "best_of_n",
                            "eval_before", "ppo", "eval_after"]
    assert read(out / "pipeline_config.json")["pipeline"]["eval_num_prompts"] == 2

    # A rerun skips every finished stage: no output changes.
    finished = digests(out)
    summary = pipeline.main(parse(setup["argv"]))
    assert digests(out) == finished and read(out / "stages.json") == stages
    assert {row["this_run"] for row in summary["stages"] if row["stage"] in stages} == {"skipped"}

    # Changed evaluation settings redo the two evaluations only.
    summary = pipeline.main(parse([*setup["argv"], "--eval_max_new_tokens", "4"]))
    ran = {row["stage"] for row in summary["stages"] if row["this_run"] == "ran"}
    assert ran == {"eval_before", "eval_after"}
    now = digests(out)
    assert all(now[name] == finished[name] for name in ("refine", "reward_model", "judge", "best_of_n", "ppo"))
    assert read(out / "eval" / "after" / "metrics.json")["sampling"]["max_new_tokens"] == 4


    # A stage that ran again (here: the export's finish stamp changed) makes the stages reading it stale.
    state = read(out / "stages.json")
    state["export"]["finished"] = "2000-01-01T00:00:00+00:00"
    (out / "stages.json").write_text(json.dumps(state))
    summary = pipeline.main(parse([*setup["argv"], "--eval_max_new_tokens", "4"]))
    ran = {row["stage"] for row in summary["stages"] if row["this_run"] == "ran"}
    assert ran == {"eval_before", "ppo", "eval_after"}


def test_the_reported_reward_quality_is_the_shipped_classifiers_even_when_it_is_the_vanilla_one():
    """A run that ships round 0 ships the vanilla PN classifier; round 0's own entry rates the annotator's labels."""
    summary = {"selected_round": 0, "shipped": "vanilla",
               "rounds": [{"round": 0, "quality": {"test": {"accuracy": 0.618, "auc": 0.710}}},
                          {"round": 1, "quality": {"test": {"accuracy": 0.655, "auc": 0.681}}}],
               "shipped_metrics": {"round": 0, "vanilla": True, "quality": {"test": {"accuracy": 0.636, "auc": 0.740}}}}
    assert selected_quality(summary) == {"round": 0, "source": "vanilla", "accuracy": 0.636, "auc": 0.740}


def test_labels_table_sets_every_round_beside_the_annotators_labels_and_names_what_ships():
    refine = {"config": {"loss": "robust_uu"}, "selected_round": 0, "shipped": "vanilla",
              "rounds": [{"round": 0, "selection_score": 0.70, "quality": {"test": {"accuracy": 0.618, "auc": 0.710}}},
                         {"round": 1, "selection_score": 0.49, "quality": {"test": {"accuracy": 0.655, "auc": 0.681}}}],
              "shipped_metrics": {"quality": {"test": {"accuracy": 0.636, "auc": 0.740}}}}
    vanilla = {"selected_round": 1, "shipped": "refined", "rounds": [],
               "shipped_metrics": {"quality": {"test": {"accuracy": 0.630, "auc": 0.735}}}}
    lines = labels_table(refine, vanilla).splitlines()[2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert rows == [["round 0: the annotator's labels", "0.618", "0.710", "0.700"],
                    ["round 1: robust_uu", "0.655", "0.681", "0.490"],
                    ["vanilla RLAIF: PN on round 0's labels", "0.630", "0.735", "–"],
                    ["shipped: vanilla, round 0", "0.636", "0.740", "–"]]
