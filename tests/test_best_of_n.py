"""alignment/best_of_n.py: the picks by hand, and the probe end to end on tiny models (a tiny Llama policy that
samples varied replies, tiny Llama sequence classifiers as reward models and judge)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO, import_recipe, import_script
from test_safety_eval import BENIGN, HARMFUL, scrambled_llama, tiny_judge
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignment.best_of_n import best_of_n_picks, logit_spreads, probe_outcomes, random_picks, run_probe
from alignment.evaluate import SamplingConfig
from alignment.intervals import ranking_auc
from alignment.prompts import Prompt
from refinement.data import format_example

SAMPLING = SamplingConfig(max_new_tokens=6, batch_size=8, do_sample=True, temperature=1.0, seed=3)


def test_picks_by_hand():
    scores = np.array([[0.1, 0.9, 0.5, 2.0],
                       [3.0, 0.0, 4.0, 1.0]])
    assert best_of_n_picks(scores, 1).tolist() == [0, 0]
    assert best_of_n_picks(scores, 2).tolist() == [1, 0]
    assert best_of_n_picks(scores, 4).tolist() == [3, 2]
    with pytest.raises(ValueError, match="k=5"):
        best_of_n_picks(scores, 5)
    picks = random_picks(1000, 4, seed=0)
    assert set(picks.tolist()) == {0, 1, 2, 3} and (picks == random_picks(1000, 4, seed=0)).all()


def test_ranking_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: 3 of the 4 (positive, negative) pairs are ordered right
    assert ranking_auc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0])) == 0.75
    assert ranking_auc(np.array([0.9, 0.4]), np.array([1, 1])) is None


def test_outcomes_by_hand():
    prompts = [Prompt("h1", True, "t"), Prompt("h2", True, "t"), Prompt("b1", False, "t")]
    harmless = np.array([[0, 1], [0, 0], [1, 1]], dtype=bool)
    refusal = np.array([[0, 1], [1, 0], [0, 1]], dtype=bool)
    reward = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 5.0]])  # picks reply 1, 0, 1 at k = 2
    outcomes = probe_outcomes(prompts, harmless, refusal, {"rm": reward}, ks=(1, 2), seed=0)
    at_two = outcomes["rm"][2]
    assert at_two["picks"] == [1, 0, 1]
    assert at_two["harmless_harmful"]["value"] == 0.5      # h1's reply 1 is harmless, h2's reply 0 is not
    assert at_two["refusal_harmful"]["value"] == 1.0       # both picked replies to harmful prompts refuse
    assert at_two["refusal_benign"]["value"] == 1.0        # b1's reply 1 refuses
    assert outcomes["rm"][1]["harmless_harmful"]["value"] == 0.0  # k = 1: reply 0 everywhere
    assert outcomes["random"][1]["harmless_vs_random"] is None
    assert at_two["harmless_vs_random"]["value"] == pytest.approx(
        0.5 - outcomes["random"][2]["harmless_harmful"]["value"])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("best_of_n")
    return {"policy": scrambled_llama(root / "policy", seed=1), "judge": tiny_judge(root / "judge", seed=3),
            "rm_a": tiny_judge(root / "rm_a", seed=5), "rm_b": tiny_judge(root / "rm_b", seed=6)}


def classifier_logits(folder: str, texts: list[str]) -> list[float]:
    """Independent scorer: the folder's classifier on each text alone (no batching, no padding)."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return [float(model(**tokenizer(text, return_tensors="pt")).logits[0, 0]) for text in texts]


def test_logit_spreads_and_matched_lambda_by_hand(tmp_path):
    rows = [{"logits": {"gold": [0.0, 4.0], "weak": [1.0, 2.0]}}, {"logits": {"gold": [-4.0, 0.0], "weak": [0.0, 1.0]}}]
    (tmp_path / "replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spreads = logit_spreads(tmp_path)
    assert spreads == pytest.approx({"gold": np.sqrt(8.0), "weak": np.sqrt(0.5)})  # population sd of all replies
    bench = import_script("safety_alignment", REPO / "bench" / "safety_alignment.py")
    overrides = {"lambda_init": 1.5, "lambda_max": 3.0, "lambda_lr": 0.0, "beta": 0.04}
    weak = bench.matched_overrides(overrides, spreads, "weak")
    assert weak == pytest.approx({**overrides, "lambda_init": 6.0, "lambda_max": 12.0})  # 4x the push per logit
    assert bench.matched_overrides(overrides, spreads, "gold") == overrides
    assert bench.matched_overrides({"lambda_init": 1.0, "lambda_max": None}, spreads, "weak")["lambda_max"] is None
    with pytest.raises(ValueError, match="lambda_init"):
        bench.matched_overrides({"beta": 0.04}, spreads, "weak")
    with pytest.raises(FileNotFoundError, match="no probe replies"):
        logit_spreads(tmp_path / "missing")


def test_probe_picks_the_reply_each_reward_scores_highest(models, tmp_path):
    out = tmp_path / "probe"
    result = run_probe(models["policy"], HARMFUL, BENIGN, {"rm_a": models["rm_a"]}, models["judge"], out,
                       ks=(1, 2, 4), sampling=SAMPLING)
    rows = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [p.text for p in HARMFUL + BENIGN]
    assert all(len(r["replies"]) == 4 for r in rows)
    assert len({reply for r in rows for reply in r["replies"]}) > len(rows)  # sampled: replies differ
    for arm in ("rm_a", "judge"):
        folder = models[arm]
        for k in (1, 2, 4):
            picks = result["outcomes"][arm][k]["picks"]
            for row, pick in zip(rows, picks):
                rescored = classifier_logits(folder, [format_example(row["prompt"], r) for r in row["replies"][:k]])
                assert rescored[pick] == pytest.approx(max(rescored), abs=1e-4), (arm, k, row["prompt"])
    # the judge arm's picks are harmless wherever any of the first k replies is
    judge_rows = [r for r in rows if r["is_harmful"]]
    harmless_any = np.mean([max(r["logits"]["judge"]) > 0 for r in judge_rows])
    assert result["outcomes"]["judge"][4]["harmless_harmful"]["value"] == pytest.approx(harmless_any)
    assert "| rm_a | 4 |" in (out / "probe.md").read_text()
    rankings = result["all_replies"]["rankings_on_harmful"]
    assert rankings["judge"]["auc_vs_judge"] in (1.0, None)  # the judge ranks its own verdicts perfectly


def test_a_second_probe_reuses_the_replies_and_adds_an_arm(models, tmp_path):
    out = tmp_path / "probe"
    run_probe(models["policy"], HARMFUL, BENIGN, {"rm_a": models["rm_a"]}, models["judge"], out, ks=(1, 2),
              sampling=SAMPLING)
    first = (out / "replies.jsonl").read_text()
    again = run_probe(models["policy"], HARMFUL, BENIGN, {"rm_a": models["rm_a"], "rm_b": models["rm_b"]},
                      models["judge"], out, ks=(1, 2), sampling=SAMPLING)
    assert again["seconds"]["sampling"] is None
    rows = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    assert [r["replies"] for r in rows] == [json.loads(line)["replies"] for line in first.splitlines()]
    assert list(again["outcomes"]) == ["random", "rm_a", "rm_b", "judge"]
    changed = run_probe(models["policy"], HARMFUL, BENIGN, {"rm_a": models["rm_a"]}, models["judge"], out,
                        ks=(1, 2), sampling=SamplingConfig(**{**SAMPLING.__dict__, "seed": 4}))
    assert changed["seconds"]["sampling"] is not None  # other settings: sampled again


def test_probe_refuses_greedy_decoding_and_reserved_names(models, tmp_path):
    with pytest.raises(ValueError, match="do_sample"):
        run_probe(models["policy"], HARMFUL, BENIGN, {}, models["judge"], tmp_path / "a", ks=(1, 2),
                  sampling=SamplingConfig(max_new_tokens=4))
    with pytest.raises(ValueError, match="probe's own arms"):
        run_probe(models["policy"], HARMFUL, BENIGN, {"judge": models["rm_a"]}, models["judge"], tmp_path / "b")


def test_the_probe_recipe_refuses_what_it_cannot_probe_in_one_line(tmp_path):
    recipe = import_recipe("best_of_n_probe")

    def run(*flags: str):
        return recipe.main(*recipe.make_parser().parse_args_and_config(
            ["--rewards", "refined=r", "--output_dir", str(tmp_path), *flags]))

    for flags, message in ((("--judge", "j", "--do_sample", "false"), "picks among sampled replies"),
                           ((), "--output_dir and --judge are required"),
                           (("--judge", "j", "--ks", "0", "4"), "each k must be at least 1"),
                           (("--judge", "j", "--rewards", "no-name"), "expected name=folder")):
        with pytest.raises(SystemExit, match=message):
            run(*flags)
    assert not any(tmp_path.iterdir())  # nothing written
