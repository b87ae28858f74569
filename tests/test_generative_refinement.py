"""recipes/generative_refinement.py on tiny models from its shipped YAML: two rounds of generate -> self-judge ->
refine -> export -> PPO -> evaluate, a rerun that skips them, and the no-UU baseline with a human's labels.

The policy is a tiny Llama that also judges its own replies (it knows the Yes/No tokens); the classifier backbone
is the same tiny Llama, frozen; the judge is PN-trained on a slice of the demo corpus. Random tiny models know
nothing of harm: with seed 0 and the `response_safe` question the self-judge's verdicts happen to agree with the
judge's on the labelled samples of both rounds (theta_p > theta_n; other seeds may not, and the loss then refuses),
and min_delta 0 lets UU train on that small margin. These tests check the plumbing; bench/generative_refinement.py
measures the effect."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, demo_build, import_recipe, kill_once, write_jsonl
from safetensors.torch import load_file
from tiny_models import JUDGE_TOKENS, build_tiny_llama

from alignment.demo import demo_path
from refinement.labeled_sample import Answer, display_order, write_answers

generative = import_recipe("generative_refinement")

YAML = REPO / "recipes" / "configs" / "generative" / "cpu_smollm2.yaml"
SUBSET = {"train": (30, 20), "val": (6, 6), "test": (6, 6)}  # the judge's demo pairs: split -> (harmless, harmful)
PROMPTS, SAMPLES, LABELED = 20, 2, 10


def first_part(name: str) -> list[dict]:
    """The demo corpus's first part (alignment/demo_data/build.py): this chain's few-shot and prompt sources, so its
    tiny random judge sees the same inputs however the corpus grows (a prompt file's first part ends with its
    heldout rows)."""
    rows = [json.loads(line) for line in open(demo_path(name))]
    if name != "pairs":
        return rows[:max(i for i, r in enumerate(rows) if r["split"] == "heldout") + 1]
    build = demo_build()
    rng = random.Random(build.SEED)
    size = len(build.harmful_rows(rng, build.HarmfulWords())[0]) + len(build.benign_rows(rng, build.BenignWords())[0])
    return rows[:size]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, feature_cache_dir):
    base = tmp_path_factory.mktemp("generative")
    rows = first_part("pairs")
    sources = {"demonstrations_source": "pairs", "harmful_prompts": "harmful_prompts",
               "benign_prompts": "benign_prompts"}
    source_flags = [x for option, name in sources.items()
                    for x in (f"--{option}", str(write_jsonl(base / f"first_{name}.jsonl", first_part(name))))]
    subset = [r for split, counts in SUBSET.items() for label, count in zip((1, 0), counts)
              for r in [r for r in rows if r["split"] == split and r["label"] == label][:count]]
    policy = build_tiny_llama(base / "policy", extra_tokens=JUDGE_TOKENS)
    classifier = {"model_name_or_path": policy, "max_length": 64, "head_epochs": 5,
                  "feature_cache_dir": str(feature_cache_dir)}
    overrides = {
        "judge_overrides": {**classifier, "dataset_path": str(write_jsonl(base / "pairs.jsonl", subset))},
        # 10 labels cannot bound delta away from 0: the point rule lets the tiny chain train both rounds
        # the last trained round ships (not round 0's PN classifier): the test follows the chain, not label quality
        "refine_overrides": {**classifier, "num_rounds": 2, "min_delta": 0.0, "prior_guard": "point",
                             "round_selection": "last", "annotator": {
            "dtype": "float32", "batch_size": 8, "max_prompt_tokens": 16, "max_response_tokens": 32,
            "template": "response_safe"}},
        "rl_overrides": {"per_device_train_batch_size": 4, "total_episodes": 8, "local_rollout_forward_batch_size": 4,
                         "response_length": 8, "max_prompts": 8, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8,
                         "lora_target_modules": ["q_proj", "v_proj"], "disable_tqdm": True},
    }
    argv = ["--config", str(YAML), "--seed", "0", "--policy", policy, "--num_prompts", str(PROMPTS),
            "--samples_per_prompt", str(SAMPLES), "--max_new_tokens", "8", "--num_labeled", str(LABELED),
            "--eval_num_prompts", "2", "--eval_max_new_tokens", "6", *source_flags,
            *[x for k, v in overrides.items() for x in (f"--{k}", json.dumps(v))]]
    return {"base": base, "argv": argv, "policy": policy, "overrides": overrides}


def parse(argv: list[str]):
    (config,) = generative.make_parser().parse_args_and_config(argv)
    return config


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def two_rounds(setup):
    out = setup["base"] / "two_rounds"
    argv = [*setup["argv"], "--num_rounds", "2", "--output_dir", str(out)]
    return out, argv, generative.main(parse(argv))


def test_two_rounds_chain_policy_self_judge_reward_and_rl(two_rounds, setup):
    out, _, summary = two_rounds
    assert list(read(out / "stages.json")) == [
        "demonstrations", "judge", "eval_00",
        *[f"{stage}_{t:02d}" for t in (1, 2) for stage in ("generate", "refine", "export", "rl", "eval")]]
    demonstrations = read_jsonl(out / "demonstrations.jsonl")
    assert len(demonstrations) == 4 and sorted(d["label"] for d in demonstrations) == [0, 0, 1, 1]
    for t in (1, 2):
        folder = out / f"round_{t:02d}"
        policy_before = setup["policy"] if t == 1 else str(out / "round_01" / "rl" / "model")
        # (a) K replies per prompt, a prompt's replies in one split, every reply labelled by the judge
        rows = read_jsonl(folder / "generations.jsonl")
        assert len(rows) == PROMPTS * SAMPLES and {r["sample"] for r in rows} == set(range(SAMPLES))
        split_of = {}
        for r in rows:
            assert split_of.setdefault(r["prompt"], r["split"]) == r["split"]
        assert set(split_of.values()) == {"train", "val", "test"} and len(split_of) == PROMPTS
        assert all(r["label"] == int(r["judge_logit"] > 0) for r in rows)
        # (b) the policy of the round before judged the replies, from the recipe's demonstrations
        annotation = read(folder / "refine" / "annotation" / "annotation_summary.json")
        assert annotation["annotator"]["model_name_or_path"] == policy_before
        assert annotation["annotator"]["demonstrations_path"] == str(out / "demonstrations.jsonl")
        # (c, d) robust UU with LABELED judge labels; the record's self-judgement accuracy is the round-0 labels'
        refine = read(folder / "refine" / "summary.json")
        assert refine["config"]["loss"] == "robust_uu" and refine["labeled_items"] == LABELED
        annotated = read_jsonl(folder / "refine" / "annotation" / "annotated.jsonl")
        round_zero = read_jsonl(folder / "refine" / "round_00" / "relabels.jsonl")
        annotated, round_zero = ([r for r in rows if r["split"] == "train"] for rows in (annotated, round_zero))
        agreement = np.mean([a["label"] == z["pseudo_label"] for a, z in zip(annotated, round_zero)])
        record = summary["rounds"][t]
        assert record["self_judgement_accuracy"] == pytest.approx(agreement)
        assert record["shipped_refinement_round"] == refine["selected_round"] >= 1
        # (e) RL from the previous policy on this round's exported reward; (f) its evaluation
        rl = read(folder / "rl" / "summary.json")
        assert rl["policy"] == policy_before and rl["reward_model"] == str(folder / "reward_model")
        metrics = read(folder / "eval" / "metrics.json")
        assert metrics["policy"] == str(folder / "rl" / "model") and metrics["reference"] == setup["policy"]
        assert metrics["judge"] == str(out / "judge" / "model")
        assert record["harmless_rate"] == metrics["harmful"]["harmless_rate"]
        assert record["benign_refusal_rate"] == metrics["benign"]["refusal_rate_phrases"]
    assert summary["rounds"][0]["round"] == 0 and summary["rounds"][0]["harmless_rate"] is not None
    assert (out / "rounds.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| round |" in report and "stands in for a human" in report
    assert read(out / "rounds.json")["rounds"] == summary["rounds"]


def test_a_rerun_skips_every_finished_stage(two_rounds):
    out, argv, _ = two_rounds
    stamps = read(out / "stages.json")
    summary = generative.main(parse(argv))
    assert set(summary["this_run"].values()) == {"skipped"} and read(out / "stages.json") == stamps


def test_baseline_with_a_humans_labels_stops_for_labelling_then_continues(two_rounds, setup):
    judge = two_rounds[0] / "judge" / "model"
    out = setup["base"] / "baseline_human"
    argv = [*setup["argv"], "--num_rounds", "1", "--output_dir", str(out), "--reward", "self_judgement",
            "--labels_from", "human", "--judge_model", str(judge)]
    with pytest.raises(SystemExit, match=r"(?s)0 of 10 items answered.*recipes/label_sample\.py .*--num_items 10"):
        generative.main(parse(argv))
    # A person labels the drawn sample of the round's training replies (truthfully: the judge's verdicts).
    rows = read_jsonl(out / "round_01" / "generations.jsonl")
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    answers = [Answer(item=k, index=train[p], pool_index=int(p), label=rows[train[p]]["label"],
                      prompt=rows[train[p]]["prompt"], response=rows[train[p]]["response"], time="2026-11-30T00:00Z")
               for k, p in enumerate(display_order(len(train), LABELED, seed=1))]
    write_answers(out / "round_01" / "labels" / "sample.jsonl", answers)
    summary = generative.main(parse(argv))

    refine = read(out / "round_01" / "refine" / "summary.json")
    assert refine["config"]["loss"] == "pn" and refine["selected_round"] == 1 and len(refine["rounds"]) == 2
    sample = read(out / "round_01" / "refine" / "labeled_sample.json")
    assert sample["source"] == str(out / "round_01" / "labels" / "sample") and len(sample["gold"]) == LABELED
    assert "judge" not in read(out / "stages.json")  # the given judge is used, not trained
    assert "human's labels" in (out / "report.md").read_text() and summary["reward"] == "self_judgement"


def test_benchmark_runs_both_arms_from_the_same_start_and_scores_its_targets(two_rounds, setup):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_generative", REPO / "bench" / "generative_refinement.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = setup["base"] / "bench"
    # The YAML and the seed come from the benchmark; every other flag (here: the tiny models) goes to both arms.
    extra = setup["argv"][4:]  # without "--config <yaml> --seed 0"
    result = bench.main(["--num_rounds", "1", "--out", str(out), *extra,
                         "--judge_model", str(two_rounds[0] / "judge" / "model")])

    uu, no_uu = (read(out / arm / "rounds.json") for arm in ("uu", "no_uu"))
    assert uu["reward"] == "refined" and no_uu["reward"] == "self_judgement"
    assert result["rounds"] == {"uu": uu["rounds"], "no_uu": no_uu["rounds"]}
    # same seed, same starting policy: identical generations and self-judgements in round 1
    assert (out / "uu" / "round_01" / "generations.jsonl").read_text() == \
        (out / "no_uu" / "round_01" / "generations.jsonl").read_text()
    assert uu["rounds"][1]["self_judgement_accuracy"] == no_uu["rounds"][1]["self_judgement_accuracy"]
    harmless = [r["harmless_rate"] for r in uu["rounds"]]
    goals = {g["target"]: g["met"] for g in result["targets"]}
    assert goals["harmless rate rises round over round (robust UU)"] == (harmless[1] > harmless[0])
    assert goals["ends above the no-UU baseline (harmless rate, last round)"] == \
        (uu["rounds"][-1]["harmless_rate"] > no_uu["rounds"][-1]["harmless_rate"])
    text = (out / "results.md").read_text()
    assert "| harmless rate, held-out harmful | uu |" in text and (out / "rounds.png").stat().st_size > 0


def test_a_round_whose_sample_finds_no_signal_keeps_its_policy(two_rounds, setup):
    """A min_delta no labelled sample can pass stands for self-judgements without signal: no reward, no RL, the
    policy and its evaluation carry over, and the next round samples from the same policy again."""
    out = setup["base"] / "refused"
    refine = {**setup["overrides"]["refine_overrides"], "min_delta": 0.99}
    argv = [*setup["argv"], "--num_rounds", "2", "--output_dir", str(out), "--refine_overrides", json.dumps(refine),
            "--judge_model", str(two_rounds[0] / "judge" / "model")]
    summary = generative.main(parse(argv))
    outcome = read(out / "round_01" / "refine_outcome.json")
    assert "delta" in outcome["refused"] and outcome["selected_round"] is None
    assert not (out / "round_01" / "reward_model").exists() and not (out / "round_01" / "rl").exists()
    first, second = summary["rounds"][1], summary["rounds"][2]
    assert first["refused"] == outcome["refused"] and first["self_judgement_accuracy"] is not None
    assert first["harmless_rate"] == summary["rounds"][0]["harmless_rate"] and "classifier_accuracy" not in first
    stages = read(out / "stages.json")
    assert stages["generate_02"]["argv"][1] == setup["policy"]  # round 2 samples from the kept starting policy
    assert second["refused"] and second["harmless_rate"] == summary["rounds"][0]["harmless_rate"]
    assert [name for name in stages if name.endswith("_01")] == ["generate_01", "refine_01"]
    report = (out / "report.md").read_text()
    assert "| 1 | refused (policy kept) |" in report and "Round 1 refused: " in report


def test_grpo_trains_the_round_when_asked(two_rounds, setup):
    out = setup["base"] / "grpo"
    rl = {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 8, "max_steps": 1,
          "max_prompts": 8, "lora_target_modules": ["q_proj", "v_proj"], "lora_r": 4, "lora_alpha": 8,
          "disable_tqdm": True}
    argv = [*setup["argv"], "--num_rounds", "1", "--output_dir", str(out), "--rl_trainer", "grpo",
            "--rl_overrides", json.dumps(rl), "--judge_model", str(two_rounds[0] / "judge" / "model")]
    summary = generative.main(parse(argv))
    rl_summary = read(out / "round_01" / "rl" / "summary.json")
    assert rl_summary["trainer"] == "grpo" and rl_summary["steps"] == 1
    assert read(out / "stages.json")["rl_01"]["argv"][1].endswith("configs/grpo/cpu_smollm2.yaml")
    assert summary["rounds"][1]["harmless_rate"] == read(out / "round_01" / "eval" / "metrics.json")["harmful"][
        "harmless_rate"]


@pytest.mark.slow
def test_a_round_killed_mid_refinement_resumes_to_the_uninterrupted_round(two_rounds, setup):
    """`kill -9` while round 1 refines (its generations written, its reward not yet trained), then the same command:
    the round ends exactly as a run that was never killed (generations, relabels, reward, RL policy, evaluation)."""
    def command(out: Path) -> list[str]:
        return [sys.executable, "recipes/generative_refinement.py", *setup["argv"], "--num_rounds", "1",
                "--output_dir", str(out), "--judge_model", str(two_rounds[0] / "judge" / "model")]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed, clean = setup["base"] / "killed", setup["base"] / "clean"
    annotated = killed / "round_01" / "refine" / "annotation" / "annotated.jsonl"
    kill_once(command(killed), annotated.exists, "round 1's self-judgements", env, timeout=600)
    assert not (killed / "round_01" / "eval").exists(), "the round finished before it could be killed"
    stamps = read(killed / "stages.json")
    assert "generate_01" in stamps and "refine_01" not in stamps  # only finished stages are recorded

    for out in (killed, clean):
        done = subprocess.run(command(out), cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert read(killed / "stages.json")["generate_01"] == stamps["generate_01"]  # not sampled again

    one, other = killed / "round_01", clean / "round_01"
    for name in ("generations.jsonl", "refine/round_01/relabels.jsonl"):
        assert (one / name).read_bytes() == (other / name).read_bytes(), name
    for name in ("reward_model/model.safetensors", "rl/adapter/adapter_model.safetensors"):
        after_kill, straight = load_file(one / name), load_file(other / name)
        assert after_kill.keys() == straight.keys()
        assert all(torch.equal(after_kill[key], straight[key]) for key in straight), name
    metrics = [read(folder / "eval" / "metrics.json") for folder in (one, other)]
    assert {g: metrics[0][g] for g in ("harmful", "benign")} == {g: metrics[1][g] for g in ("harmful", "benign")}
