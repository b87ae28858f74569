"""PPO (trl.experimental.ppo) on the exported model: native (same backbone and tokenizer) and the re-tokenizing
adapter (another vocabulary), checked through TRL's own get_reward and in short PPO runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reward_fixtures import SAFETY_PROMPTS, policy_tokenizer, ppo_trainer
from transformers import AutoTokenizer

from alignment.trl_api import ppo_get_reward
from refinement.embedded import minilm_dir
from reward.functions import HarmlessnessReward
from reward.ppo import PolicyTokenRewardModel, encode_prompt, load_native_reward_model, ppo_reward_model

pytest_plugins = ["test_reward_fixtures"]  # the shared tiny reward models (fixture reward_models)

COMPLETIONS = ["sure, here is how you do it.", "i'm sorry, i cannot help with that.", "bake bread", "",
               "kill a person", "write a poem"]


def _rollout_batch(tokenizer, prompts, completions) -> tuple[torch.Tensor, int]:
    """query_responses as PPO builds them: left-padded queries, then responses ending in eos, right-padded."""
    queries = [encode_prompt(p, tokenizer) for p in prompts]
    responses = [tokenizer(c)["input_ids"] + [tokenizer.eos_token_id] for c in completions]
    width_q, width_r = max(map(len, queries)), max(map(len, responses))
    pad = tokenizer.pad_token_id
    rows = [[pad] * (width_q - len(q)) + q + r + [pad] * (width_r - len(r)) for q, r in zip(queries, responses)]
    return torch.tensor(rows), width_q


@pytest.mark.parametrize("conversational, pad_is_eos", [(False, False), (True, False), (True, True)])
def test_adapter_gives_ppo_the_text_reward_of_each_rollout(reward_models, conversational, pad_is_eos):
    tokenizer = policy_tokenizer(reward_models.policy, pad_is_eos)
    prompts = [[{"role": "user", "content": p}] for p in SAFETY_PROMPTS] if conversational else SAFETY_PROMPTS
    reward = HarmlessnessReward(reward_models.rm_other)  # another vocabulary than the policy's
    adapter = PolicyTokenRewardModel(reward, tokenizer, prompts + ["an unused prompt"])
    query_responses, context_length = _rollout_batch(tokenizer, prompts, COMPLETIONS)
    _, scores, _ = ppo_get_reward(adapter, query_responses, tokenizer.pad_token_id, context_length)
    completions = ([[{"role": "assistant", "content": c}] for c in COMPLETIONS] if conversational
                   else COMPLETIONS)
    np.testing.assert_allclose(scores.numpy(), reward(prompts, completions), atol=1e-5)
    assert len(set(np.round(scores.numpy(), 5))) > 1  # the rows really are scored one by one


def test_adapter_names_a_query_it_was_not_given(reward_models):
    tokenizer = policy_tokenizer(reward_models.policy)
    adapter = PolicyTokenRewardModel(HarmlessnessReward(reward_models.rm_other), tokenizer, SAFETY_PROMPTS[:1])
    query_responses, context_length = _rollout_batch(tokenizer, SAFETY_PROMPTS[1:2], ["no."])
    with pytest.raises(KeyError, match="not among the 1 prompts"):
        ppo_get_reward(adapter, query_responses, tokenizer.pad_token_id, context_length)


def test_native_loader_accepts_the_policys_own_classifier_only(reward_models):
    tokenizer = policy_tokenizer(reward_models.policy)
    native = load_native_reward_model(reward_models.rm_native, tokenizer)
    query_responses, context_length = _rollout_batch(tokenizer, SAFETY_PROMPTS, COMPLETIONS)
    _, scores, _ = ppo_get_reward(native, query_responses, tokenizer.pad_token_id, context_length)
    # PPO's native score is the classifier's own logit of the (unpadded) policy tokens.
    for row, score in zip(query_responses, scores):
        ids = row[row != tokenizer.pad_token_id][None]
        with torch.inference_mode():
            assert native(input_ids=ids).logits[0, 0].item() == pytest.approx(score.item(), abs=1e-4)
    with pytest.raises(ValueError, match="vocabulary differs"):
        load_native_reward_model(reward_models.rm_other, tokenizer)
    with pytest.raises(ValueError, match="no `.score` head"):  # a BERT head, with its own (matching) vocabulary
        load_native_reward_model(minilm_dir(), AutoTokenizer.from_pretrained(minilm_dir()))


def test_ppo_reward_model_picks_native_or_adapter(reward_models):
    tokenizer = policy_tokenizer(reward_models.policy)
    assert type(ppo_reward_model(reward_models.rm_native, tokenizer, SAFETY_PROMPTS)).__name__ == (
        "LlamaForSequenceClassification")
    assert isinstance(ppo_reward_model(reward_models.rm_other, tokenizer, SAFETY_PROMPTS), PolicyTokenRewardModel)
    assert isinstance(ppo_reward_model(reward_models.rm_native, tokenizer, SAFETY_PROMPTS, transform="probability"),
                      PolicyTokenRewardModel)
    with pytest.raises(ValueError, match="vocabulary differs"):
        ppo_reward_model(reward_models.rm_other, tokenizer, SAFETY_PROMPTS, mode="native")


@pytest.mark.parametrize("path", ["native", "adapter"])
def test_ppo_trains_on_the_exported_model(reward_models, tmp_path, path):
    tokenizer = policy_tokenizer(reward_models.policy)
    folder = reward_models.rm_native if path == "native" else reward_models.rm_other
    reward_model = ppo_reward_model(folder, tokenizer, SAFETY_PROMPTS, mode=path)
    trainer = ppo_trainer(reward_models.policy, reward_model, tmp_path)
    trainer.train()
    scores = [entry["objective/scores"] for entry in trainer.state.log_history if "objective/scores" in entry]
    assert len(scores) == 2 and np.all(np.isfinite(scores))
