"""Reward models for TRL 1.12's PPO (`trl.experimental.ppo`), which scores the policy's own token ids.

PPO does not call a reward function: for each rollout it runs `get_reward(reward_model, query_response_ids,
pad_token_id, context_length)`, i.e. `reward_model.score(backbone(ids).hidden_states[-1])` with the backbone at
`getattr(reward_model, reward_model.base_model_prefix)`, and reads the value at the last non-pad response token.
Two ways to meet that:

- native (`load_native_reward_model`): the exported classifier is a decoder `*ForSequenceClassification` with a
  `.score` head whose tokenizer *is* the policy's (e.g. refined on SmolLM2 features, policy SmolLM2). Fastest;
  it reads the policy's text as the policy formats it (a chat template), not in the `format_example` format
  it was trained on, so expect shifted logits there.
- adapter (`PolicyTokenRewardModel`): any text reward (an exported classifier of any architecture and vocabulary
  via reward.functions.HarmlessnessReward, or reward.lagrangian.LagrangianReward). It maps each query back to its
  prompt, decodes the response with the policy tokenizer, scores `format_example(prompt, response)` and hands
  PPO that score at every position. Queries are recognised by their token ids, so build the PPO dataset with
  `ppo_dataset(prompts, tokenizer)` and give the adapter the same prompts.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import datasets
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

TextReward = Callable[..., list[float]]  # f(prompts=..., completions=..., **kwargs) -> one float per pair


def encode_prompt(prompt: str | Sequence[dict], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The query ids PPO generates from: a list of messages through the chat template (with the generation
    prompt), a plain string tokenized as is."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    encoded = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True,
                                            return_dict=True)
    return list(encoded["input_ids"])


def ppo_dataset(prompts: Sequence, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """The pre-tokenized dataset PPOTrainer wants (one `input_ids` column)."""
    return datasets.Dataset.from_dict({"input_ids": [encode_prompt(p, tokenizer) for p in prompts]})


def load_native_reward_model(path: str | os.PathLike, policy_tokenizer: PreTrainedTokenizerBase):
    """The exported classifier itself as PPO's reward model; refuses one PPO cannot run on the policy's ids."""
    if AutoTokenizer.from_pretrained(str(path)).get_vocab() != policy_tokenizer.get_vocab():  # before any weights
        raise ValueError(f"{path}: its tokenizer's vocabulary differs from the policy's, so the policy's token ids "
                         "mean other tokens to it; wrap it with PolicyTokenRewardModel instead")
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    prefix = model.base_model_prefix
    if not isinstance(getattr(model, "score", None), nn.Module) or not hasattr(model, prefix):
        raise ValueError(f"{path}: {type(model).__name__} has no `.score` head on a `{prefix}` backbone, which PPO "
                         "calls directly; wrap it with PolicyTokenRewardModel instead")
    return model


class _RescoringBackbone(nn.Module):
    """Stands where PPO expects the reward model's transformer: ids in, per-position "hidden states" out, every
    position holding the text reward of its row (PPO reads the last response token's)."""

    def __init__(self, reward_fn: TextReward, tokenizer: PreTrainedTokenizerBase, prompts: Sequence):
        super().__init__()
        self.reward_fn, self.tokenizer = reward_fn, tokenizer
        self.register_prompts(prompts)

    def register_prompts(self, prompts: Sequence) -> None:
        pad = self.tokenizer.pad_token_id
        self.prompt_of: dict[tuple[int, ...], object] = {}
        for prompt in prompts:
            # PPO hides every pad-id token (also an eos equal to pad inside a chat template): key without them.
            self.prompt_of[tuple(t for t in encode_prompt(prompt, self.tokenizer) if t != pad)] = prompt
        self.key_lengths = sorted({len(k) for k in self.prompt_of}, reverse=True)

    def split(self, ids: list[int]) -> tuple[object, list[int]]:
        """(prompt, response ids) of one row's non-pad ids: the longest registered query that prefixes them."""
        for length in self.key_lengths:
            prompt = self.prompt_of.get(tuple(ids[:length]))
            if prompt is not None:
                return prompt, ids[length:]
        raise KeyError(f"a PPO query is not among the {len(self.prompt_of)} prompts given to "
                       f"PolicyTokenRewardModel: {self.tokenizer.decode(ids)[:120]!r}; build the dataset with "
                       "reward.ppo.ppo_dataset from the same prompts")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> SimpleNamespace:
        prompts, completions = [], []
        for row, mask in zip(input_ids.tolist(), attention_mask.bool().tolist()):
            prompt, response = self.split([t for t, keep in zip(row, mask) if keep])
            prompts.append(prompt)
            completions.append(self.tokenizer.decode(response, skip_special_tokens=True))
        if prompts and not isinstance(prompts[0], str):  # conversational data: TRL's completion form
            completions = [[{"role": "assistant", "content": c}] for c in completions]
        scores = torch.tensor(self.reward_fn(prompts=prompts, completions=completions), dtype=torch.float32,
                              device=input_ids.device)
        return SimpleNamespace(hidden_states=(scores[:, None, None].expand(-1, input_ids.shape[1], 1),))


class PolicyTokenRewardModel(nn.Module):
    """Any text reward as a PPO reward model on the policy's token ids (see the module docstring).

    `prompts`: every prompt of the PPO train/eval datasets (strings or message lists), as given to ppo_dataset.
    Under DeepSpeed, PPO wraps its reward model in an inference engine (trl's prepare_deepspeed reads `.config`
    and needs a parameter to place): an empty config and one frozen, unused anchor parameter let it; the text
    reward's own classifier is not a submodule, so it is never sharded."""

    base_model_prefix = "backbone"

    def __init__(self, reward_fn: TextReward, policy_tokenizer: PreTrainedTokenizerBase, prompts: Sequence):
        super().__init__()
        if policy_tokenizer.pad_token_id is None:
            raise ValueError("the policy tokenizer needs a pad token (PPO masks padding by its id)")
        self.backbone = _RescoringBackbone(reward_fn, policy_tokenizer, prompts)
        self.score = nn.Identity()
        self.config = PretrainedConfig()
        self.deepspeed_anchor = nn.Parameter(torch.zeros(1), requires_grad=False)


def ppo_reward_model(path: str | os.PathLike, policy_tokenizer: PreTrainedTokenizerBase, prompts: Sequence,
                     mode: str = "auto", transform: str = "logit") -> nn.Module:
    """The exported folder as PPO's reward model: `native` (same tokenizer, raw logit), `adapter` (any folder,
    any transform) or `auto` (native when the folder allows it and transform is `logit`, else the adapter)."""
    from .functions import HarmlessnessReward

    if mode not in ("auto", "native", "adapter"):
        raise ValueError(f"mode={mode!r}: choose auto, native or adapter")
    if mode == "native" or (mode == "auto" and transform == "logit"):
        try:
            return load_native_reward_model(path, policy_tokenizer)
        except ValueError:
            if mode == "native":
                raise
    return PolicyTokenRewardModel(HarmlessnessReward(path, transform=transform), policy_tokenizer, prompts)
