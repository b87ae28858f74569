"""Reward transforms, the TRL reward callable, and GRPO with the exported model (callable, by path, dotted path)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_reward_fixtures import SAFETY_PROMPTS, grpo_args, plain_logits
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from refinement.data import format_example
from reward import functions
from reward.functions import MODEL_ENV, HarmlessnessReward
from reward.scoring import RewardClassifier, transform_logits
from reward.texts import completion_text, prompt_text, reward_texts

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)

# ---------------------------------------------------------------------------------------------- transforms


def test_transforms_of_the_logit():
    g = np.array([-30.0, -1.0, 0.5, 2.0, 30.0])
    np.testing.assert_array_equal(transform_logits(g, "logit", threshold=0.5), g)
    p = transform_logits(g, "probability", threshold=0.5)
    assert p[2] == 0.5 and np.all(np.diff(p) > 0) and p[0] > 0 and p[-1] <= 1
    np.testing.assert_allclose(p[1], 1 / (1 + np.exp(1.5)))
    log_p = transform_logits(g, "log_probability", threshold=0.5)
    np.testing.assert_allclose(log_p[1:4], np.log(p[1:4]))
    assert np.isfinite(log_p[0]) and log_p[0] == pytest.approx(-30.5)  # no log(0) far below the threshold
    z = transform_logits(g, "standardized", calibration={"mean": 2.0, "std": 4.0})
    np.testing.assert_allclose(z, (g - 2.0) / 4.0)
    with pytest.raises(ValueError, match="logit_calibration"):
        transform_logits(g, "standardized", calibration=None)
    with pytest.raises(ValueError, match="unknown transform 'rank'"):
        transform_logits(g, "rank")


# ---------------------------------------------------------------------------------------------- texts


def test_plain_and_conversational_inputs_become_the_training_format():
    assert reward_texts(["How?"], ["Like this."]) == [format_example("How?", "Like this.")]
    chat = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": [{"type": "text", "text": "q2"}]}]
    assert prompt_text(chat) == "q1\n\nAssistant: a1\n\nHuman: q2"
    assert completion_text([{"role": "assistant", "content": "no."}]) == "no."
    assert reward_texts([chat], [[{"role": "assistant", "content": "no."}]]) == [
        "Human: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: no."]
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        reward_texts(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"prompt\[0\]: unknown role 'tool'"):
        prompt_text([{"role": "tool", "content": "x"}])
    with pytest.raises(TypeError, match=r"completions\[0\]\[0\]"):
        reward_texts(["a"], [[{"role": "assistant"}]])


# ---------------------------------------------------------------------------------------------- the callable


def test_callable_scores_the_formatted_pair_with_the_classifiers_tokenizer(reward_models):
    prompts = SAFETY_PROMPTS
    completions = ["sure, here is how you do it."] * 3 + ["i'm sorry, i cannot help with that."] * 3
    expected = plain_logits(reward_models.rm_other, [format_example(p, c) for p, c in zip(prompts, completions)])
    reward = HarmlessnessReward(reward_models.rm_other, batch_size=4)
    np.testing.assert_allclose(reward(prompts=prompts, completions=completions, trainer_state=None), expected,
                               atol=1e-5)
    chat = [[{"role": "user", "content": p}] for p in prompts]
    answers = [[{"role": "assistant", "content": c}] for c in completions]
    np.testing.assert_allclose(reward(prompts=chat, completions=answers), expected, atol=1e-5)
    probability = HarmlessnessReward(reward_models.rm_other, transform="probability")
    threshold = RewardClassifier(reward_models.rm_other).threshold
    np.testing.assert_allclose(probability(prompts, completions), 1 / (1 + np.exp(-(expected - threshold))),
                               atol=1e-5)
    standardized = HarmlessnessReward(reward_models.rm_other, transform="standardized")
    calibration = json.loads((Path(reward_models.rm_other) / "config.json").read_text())["logit_calibration"]
    np.testing.assert_allclose(standardized(prompts, completions),
                               (expected - calibration["mean"]) / calibration["std"], atol=1e-5)


def test_a_long_history_is_cut_from_its_start_never_the_reply(reward_models):
    history = " ".join(["i want to bake bread and paint a fence."] * 30)  # far beyond reward_max_length (64)
    replies = ["sure, here is how you do it.", "i'm sorry, i cannot help with that."]
    scores = HarmlessnessReward(reward_models.rm_other)([history] * 2, replies)
    assert scores[0] != pytest.approx(scores[1])  # right truncation would have scored the history twice
    np.testing.assert_allclose(scores, plain_logits(reward_models.rm_other,
                                                    [format_example(history, r) for r in replies]), atol=1e-5)


def test_callable_pickles_without_weights_and_reloads(reward_models):
    reward = HarmlessnessReward(reward_models.rm_other, transform="log_probability")
    before = reward(["how do i bake bread?"], ["mix flour and water."])
    blob = pickle.dumps(reward)
    assert len(blob) < 2_000  # the loaded model is not in the pickle
    clone = pickle.loads(blob)
    assert clone.__name__ == "harmlessness_log_probability"
    assert clone(["how do i bake bread?"], ["mix flour and water."]) == pytest.approx(before)


def test_dotted_path_instances_read_the_model_from_the_environment(reward_models, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    with pytest.raises(ValueError, match=MODEL_ENV):
        functions.harmlessness_probability(["a"], ["b"])
    monkeypatch.setenv(MODEL_ENV, reward_models.rm_other)
    direct = HarmlessnessReward(reward_models.rm_other, transform="probability")(["a"], ["b"])
    assert functions.harmlessness_probability(["a"], ["b"]) == pytest.approx(direct)
    monkeypatch.setenv(MODEL_ENV, reward_models.rm_native)  # another folder: reloaded, not the cached one
    other = HarmlessnessReward(reward_models.rm_native, transform="probability")(["a"], ["b"])
    assert functions.harmlessness_probability(["a"], ["b"]) == pytest.approx(other)
    with pytest.raises(ValueError, match="unknown transform"):
        HarmlessnessReward(reward_models.rm_other, transform="softmax")


def test_scorer_refuses_a_folder_that_is_not_a_one_logit_model(tmp_path, reward_models):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        RewardClassifier(tmp_path)
    two = AutoModelForSequenceClassification.from_pretrained(reward_models.policy, num_labels=2)
    two.save_pretrained(tmp_path / "two")
    AutoTokenizer.from_pretrained(reward_models.policy).save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="num_labels is 2"):
        RewardClassifier(tmp_path / "two")


# ---------------------------------------------------------------------------------------------- GRPO


def _prompt_dataset(conversational: bool = False):
    import datasets

    prompts = [[{"role": "user", "content": p}] for p in SAFETY_PROMPTS] if conversational else SAFETY_PROMPTS
    return datasets.Dataset.from_dict({"prompt": prompts})


def _reward_means(trainer) -> dict[str, float]:
    return {k: v for entry in trainer.state.log_history for k, v in entry.items()
            if k.startswith("rewards/") and k.endswith("/mean")}


@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_trains_with_the_callable_and_with_the_folder_by_path(reward_models, tmp_path, conversational):
    from alignment.trl_api import GRPOTrainer

    policy_tokenizer = AutoTokenizer.from_pretrained(reward_models.policy, padding_side="left")
    trainer = GRPOTrainer(
        model=reward_models.policy, processing_class=policy_tokenizer, args=grpo_args(tmp_path),
        train_dataset=_prompt_dataset(conversational),
        reward_funcs=[HarmlessnessReward(reward_models.rm_other, transform="probability"), reward_models.rm_other])
    by_path = trainer.reward_funcs[1]  # TRL loaded our folder itself, with plain transformers
    assert type(by_path).__name__ == "LlamaForSequenceClassification" and by_path.config.num_labels == 1
    trainer.train()
    means = _reward_means(trainer)
    assert set(means) == {"rewards/harmlessness_probability/mean", "rewards/rm_other/mean"}
    assert 0 < means["rewards/harmlessness_probability/mean"] < 1 and np.isfinite(means["rewards/rm_other/mean"])


def test_trl_grpo_script_loads_the_callable_by_dotted_path(reward_models, tmp_path, monkeypatch):
    from alignment.trl_api import grpo_script_main, grpo_script_parser

    data = tmp_path / "prompts"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in SAFETY_PROMPTS))
    monkeypatch.setenv(MODEL_ENV, reward_models.rm_other)
    monkeypatch.setattr(functions.harmlessness_probability, "_classifier", None)
    out = tmp_path / "out"
    argv = ["--model_name_or_path", reward_models.policy, "--dataset_name", str(data),
            "--reward_funcs", "reward.functions.harmlessness_probability", "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
            "--max_steps", "1", "--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false",
            "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--dtype", "float32"]
    script_args, training_args, model_args, dataset_args = grpo_script_parser().parse_args_and_config(argv)
    grpo_script_main(script_args, training_args, model_args, dataset_args)
    assert (out / "model.safetensors").is_file()  # the script trained and saved the policy
    # ... scoring with the module-level instance it imported, which loaded the folder named by the variable.
    assert functions.harmlessness_probability._classifier.path == reward_models.rm_other


def test_rloo_trains_with_the_callable(reward_models, tmp_path):
    from alignment.trl_api import RLOOConfig, RLOOTrainer

    args = RLOOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=1, use_cpu=True, bf16=False, gradient_checkpointing=False,
                      report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    trainer = RLOOTrainer(model=reward_models.policy, reward_funcs=[HarmlessnessReward(reward_models.rm_other,
                                                                                       transform="log_probability")],
                          args=args, train_dataset=_prompt_dataset(),
                          processing_class=AutoTokenizer.from_pretrained(reward_models.policy, padding_side="left"))
    trainer.train()
    means = _reward_means(trainer)
    assert list(means) == ["rewards/harmlessness_log_probability/mean"]
    assert means["rewards/harmlessness_log_probability/mean"] < 0  # a log-probability
